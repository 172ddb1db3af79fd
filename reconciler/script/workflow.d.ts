// Type declarations of '@temporalio/workflow' as this service runs it (SPEC 4b):
// exactly the supported API, with the names, argument shapes and semantics of
// Temporal's TypeScript SDK. Add this file to the compiler's inputs (tsconfig
// "files" or "include") to type-check workflow code against what runs.
// reconciler/script/declarations_test.go keeps it true: it type-checks the example
// workflows with tsc and compares the exported names with the runtime's.

declare module '@temporalio/workflow' {
  /** Milliseconds, or a duration string such as '30s', '2 minutes', '1.5h' (the `ms` package's format). */
  export type Duration = number | string;

  export interface RetryPolicy {
    initialInterval?: Duration;
    backoffCoefficient?: number;
    maximumInterval?: Duration;
    /** 0 (or unset) means unlimited attempts. */
    maximumAttempts?: number;
    nonRetryableErrorTypes?: string[];
  }

  export type ActivityCancellationType = 'TRY_CANCEL' | 'WAIT_CANCELLATION_COMPLETED' | 'ABANDON';

  /** Options of proxyActivities: startToCloseTimeout or scheduleToCloseTimeout is required. */
  export interface ActivityOptions {
    startToCloseTimeout?: Duration;
    scheduleToCloseTimeout?: Duration;
    scheduleToStartTimeout?: Duration;
    heartbeatTimeout?: Duration;
    retry?: RetryPolicy;
    activityId?: string;
    cancellationType?: ActivityCancellationType;
  }

  /** Options of proxyLocalActivities: startToCloseTimeout or scheduleToCloseTimeout is required. */
  export interface LocalActivityOptions {
    startToCloseTimeout?: Duration;
    scheduleToCloseTimeout?: Duration;
    retry?: RetryPolicy;
  }

  export type ActivityFunction = (...args: any[]) => Promise<any>;
  /** Activities by name: the built-ins (echo, log, http.request) and the project's components. */
  export type UntypedActivities = Record<string, ActivityFunction>;
  export type ActivityInterfaceFor<T> = {
    [K in keyof T]: T[K] extends ActivityFunction ? T[K] : never;
  };

  export function proxyActivities<A = UntypedActivities>(options: ActivityOptions): ActivityInterfaceFor<A>;
  export function proxyLocalActivities<A = UntypedActivities>(options: LocalActivityOptions): ActivityInterfaceFor<A>;

  /** A durable timer. A duration of 0 or less sleeps 1 ms. */
  export function sleep(ms: Duration): Promise<void>;

  /** Resolves once fn() is true, evaluated after each change of state. */
  export function condition(fn: () => boolean): Promise<void>;
  /** Resolves true once fn() is true, or false when timeout passes first. */
  export function condition(fn: () => boolean, timeout: Duration): Promise<boolean>;

  export interface SignalDefinition<Args extends any[] = [], Name extends string = string> {
    type: 'signal';
    name: Name;
    /** @internal carries Args */
    __args?: Args;
  }
  export interface QueryDefinition<Ret, Args extends any[] = [], Name extends string = string> {
    type: 'query';
    name: Name;
    /** @internal carries Ret and Args */
    __types?: [Ret, Args];
  }
  export interface UpdateDefinition<Ret, Args extends any[] = [], Name extends string = string> {
    type: 'update';
    name: Name;
    /** @internal carries Ret and Args */
    __types?: [Ret, Args];
  }

  export function defineSignal<Args extends any[] = [], Name extends string = string>(name: Name): SignalDefinition<Args, Name>;
  export function defineQuery<Ret, Args extends any[] = [], Name extends string = string>(name: Name): QueryDefinition<Ret, Args, Name>;
  export function defineUpdate<Ret, Args extends any[] = [], Name extends string = string>(name: Name): UpdateDefinition<Ret, Args, Name>;

  export interface UpdateHandlerOptions<Args extends any[]> {
    /** Runs before the update is accepted; throwing rejects the update. It may not issue commands. */
    validator?: (...args: Args) => void;
  }

  /** A query handler must return its answer synchronously and may not issue commands. */
  export function setHandler<Ret, Args extends any[]>(def: QueryDefinition<Ret, Args>, handler: ((...args: Args) => Ret) | undefined): void;
  /** Signals that arrive without a handler are kept until one is set. A signal carries its first argument. */
  export function setHandler<Args extends any[]>(def: SignalDefinition<Args>, handler: ((...args: Args) => void | Promise<void>) | undefined): void;
  export function setHandler<Ret, Args extends any[]>(
    def: UpdateDefinition<Ret, Args>,
    handler: ((...args: Args) => Ret | Promise<Ret>) | undefined,
    options?: UpdateHandlerOptions<Args>,
  ): void;

  export type ParentClosePolicy = 'TERMINATE' | 'ABANDON' | 'REQUEST_CANCEL';
  export type ChildWorkflowCancellationType = 'ABANDON' | 'TRY_CANCEL' | 'WAIT_CANCELLATION_REQUESTED' | 'WAIT_CANCELLATION_COMPLETED';

  /** A child runs a workflow of the same project, on the same task queue. */
  export interface ChildWorkflowOptions {
    args?: unknown[];
    /** Defaults to a uuid4(). */
    workflowId?: string;
    workflowExecutionTimeout?: Duration;
    workflowRunTimeout?: Duration;
    workflowTaskTimeout?: Duration;
    retry?: RetryPolicy;
    parentClosePolicy?: ParentClosePolicy;
    cancellationType?: ChildWorkflowCancellationType;
    memo?: Record<string, unknown>;
  }

  export interface ChildWorkflowHandle<R = any> {
    readonly workflowId: string;
    readonly firstExecutionRunId: string;
    result(): Promise<R>;
    /** Sends its first argument as the signal's payload. */
    signal<Args extends any[]>(def: SignalDefinition<Args> | string, ...args: Args): Promise<void>;
  }

  export function executeChild<R = any>(workflowType: string, options?: ChildWorkflowOptions): Promise<R>;
  export function startChild<R = any>(workflowType: string, options?: ChildWorkflowOptions): Promise<ChildWorkflowHandle<R>>;

  /** Ends this run and starts a new one of the same workflow with these arguments. */
  export function continueAsNew<F extends (...args: any[]) => any = (...args: any[]) => any>(...args: Parameters<F>): Promise<never>;

  export interface WorkflowInfo {
    readonly workflowId: string;
    readonly runId: string;
    readonly workflowType: string;
    readonly taskQueue: string;
    readonly namespace: string;
    readonly attempt: number;
    readonly firstExecutionRunId: string;
    readonly continuedFromExecutionRunId?: string;
    readonly parent?: { workflowId: string; runId: string; namespace: string };
    readonly historyLength: number;
    readonly historySize: number;
    readonly continueAsNewSuggested: boolean;
    readonly startTime: Date;
    readonly runStartTime: Date;
    readonly executionTimeout?: number;
    readonly runTimeout?: number;
    readonly cronSchedule?: string;
    readonly memo?: Record<string, unknown>;
    readonly unsafe: { readonly isReplaying: boolean };
  }
  export function workflowInfo(): WorkflowInfo;

  /** A version 4 uuid from the run's seeded randomness (the same on replay). */
  export function uuid4(): string;

  /** True for new runs and for replays of histories made by code that had this patch. */
  export function patched(patchId: string): boolean;
  export function deprecatePatch(patchId: string): void;

  export interface CancellationScopeOptions {
    timeout?: Duration;
    cancellable?: boolean;
    parent?: CancellationScope;
  }
  export class CancellationScope {
    constructor(options?: CancellationScopeOptions);
    readonly timeout?: number;
    readonly cancellable: boolean;
    readonly parent?: CancellationScope;
    readonly cancelRequested: Promise<never>;
    get consideredCancelled(): boolean;
    run<T>(fn: () => Promise<T>): Promise<T>;
    cancel(): void;
    static current(): CancellationScope;
    static cancellable<T>(fn: () => Promise<T>): Promise<T>;
    static nonCancellable<T>(fn: () => Promise<T>): Promise<T>;
    static withTimeout<T>(timeout: Duration, fn: () => Promise<T>): Promise<T>;
  }

  /** True for a CancelledFailure, and for an activity or child failure caused by one. */
  export function isCancellation(err: unknown): boolean;

  /** Lines go to the service's log (not repeated on replay). console.* goes to log too. */
  export const log: {
    trace(message: string, attrs?: Record<string, unknown>): void;
    debug(message: string, attrs?: Record<string, unknown>): void;
    info(message: string, attrs?: Record<string, unknown>): void;
    warn(message: string, attrs?: Record<string, unknown>): void;
    error(message: string, attrs?: Record<string, unknown>): void;
  };

  export type RetryState = 'IN_PROGRESS' | 'NON_RETRYABLE_FAILURE' | 'TIMEOUT' | 'MAXIMUM_ATTEMPTS_REACHED'
    | 'RETRY_POLICY_NOT_SET' | 'INTERNAL_SERVER_ERROR' | 'CANCEL_REQUESTED' | 'UNSPECIFIED';
  export type TimeoutType = 'START_TO_CLOSE' | 'SCHEDULE_TO_START' | 'SCHEDULE_TO_CLOSE' | 'HEARTBEAT' | 'UNSPECIFIED';

  export class TemporalFailure extends Error {
    constructor(message?: string | null, cause?: Error);
    readonly cause?: Error;
  }
  export interface ApplicationFailureOptions {
    message?: string;
    /** Defaults to 'Error' when the failure ends a run. */
    type?: string;
    nonRetryable?: boolean;
    details?: unknown[];
    nextRetryDelay?: Duration;
    cause?: Error;
  }
  /** Thrown from a workflow, fails the run with its type; any other error fails it with the error's name as type. */
  export class ApplicationFailure extends TemporalFailure {
    constructor(message?: string | null, type?: string | null, nonRetryable?: boolean | null, details?: unknown[] | null, cause?: Error, nextRetryDelay?: Duration | null);
    readonly type?: string | null;
    readonly nonRetryable?: boolean | null;
    readonly details?: unknown[] | null;
    readonly nextRetryDelay?: Duration | null;
    static create(options: ApplicationFailureOptions): ApplicationFailure;
    static retryable(message?: string | null, type?: string | null, ...details: unknown[]): ApplicationFailure;
    static nonRetryable(message?: string | null, type?: string | null, ...details: unknown[]): ApplicationFailure;
    static fromError(error: unknown, overrides?: ApplicationFailureOptions): ApplicationFailure;
  }
  export class ActivityFailure extends TemporalFailure {
    constructor(message: string | undefined, activityType: string, activityId: string | undefined, retryState: RetryState, identity: string | undefined, cause?: Error);
    readonly activityType: string;
    readonly activityId: string | undefined;
    readonly retryState: RetryState;
    readonly identity: string | undefined;
  }
  export class ChildWorkflowFailure extends TemporalFailure {
    constructor(namespace: string | undefined, execution: { workflowId: string; runId: string }, workflowType: string, retryState: RetryState, cause?: Error);
    readonly namespace: string | undefined;
    readonly execution: { workflowId: string; runId: string };
    readonly workflowType: string;
    readonly retryState: RetryState;
  }
  export class CancelledFailure extends TemporalFailure {
    constructor(message: string | undefined, details?: unknown[], cause?: Error);
    readonly details: unknown[];
  }
  export class TimeoutFailure extends TemporalFailure {
    constructor(message: string | undefined, lastHeartbeatDetails: unknown, timeoutType: TimeoutType);
    readonly lastHeartbeatDetails: unknown;
    readonly timeoutType: TimeoutType;
  }
  export class TerminatedFailure extends TemporalFailure {}
  export class ServerFailure extends TemporalFailure {
    constructor(message: string | undefined, nonRetryable: boolean, cause?: Error);
    readonly nonRetryable: boolean;
  }
}

// The host globals workflow code has besides ECMAScript's: durable timers and a
// console that writes to the service's log. There is no require, process, fetch,
// file system or network.
declare function setTimeout<A extends any[]>(fn: (...args: A) => void, ms?: number, ...args: A): number;
declare function clearTimeout(id: number | undefined): void;
declare const console: {
  log(...args: unknown[]): void;
  info(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};
