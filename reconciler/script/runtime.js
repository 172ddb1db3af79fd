// The workflow runtime: evaluated in every run's VM before the workflow's bundle. It
// hardens the engine (bounded native loops, no clock, no host randomness, no weak
// references), implements the '@temporalio/workflow' API on one host function, and
// exposes __rt, through which the Go driver (run.go) starts the workflow and delivers
// what Temporal says. Everything here is deterministic given the same deliveries.
//
// The bounds of native loops follow the VM's memory limit: the host says them.
(function (host) {
  "use strict";
  const [MAX_LEN, MAX_SORT] = JSON.parse(host("limits", ""));
  const apply = Reflect.apply, defineProperty = Object.defineProperty, freeze = Object.freeze;
  const JSONparse = JSON.parse;
  const hide = (obj, name, value) => defineProperty(obj, name, { value, writable: true, configurable: true, enumerable: false });

  // ---- hardening: native loops over huge sparse arrays ignore the interrupt ----
  const toLen = (v) => { v = +v; if (!(v > 0)) return 0; return v > 9007199254740991 ? 9007199254740991 : Math.floor(v); };
  const AP = Array.prototype;
  for (const m of ["join", "toString", "toLocaleString", "indexOf", "lastIndexOf", "includes", "fill", "reverse", "slice", "splice",
    "copyWithin", "forEach", "map", "filter", "reduce", "reduceRight", "some", "every", "find", "findIndex", "findLast",
    "findLastIndex", "sort", "flat", "flatMap", "at", "push", "pop", "shift", "unshift", "toReversed", "toSorted", "toSpliced",
    "with", "concat", "keys", "values", "entries"]) {
    const f = AP[m];
    if (typeof f !== "function") continue;
    const wrapped = { [m](...args) {
      if (this !== null && this !== undefined) {
        const n = toLen(this.length);
        if (n > MAX_LEN) throw new RangeError("Array.prototype." + m + " on length " + n + " (limit " + MAX_LEN + ")");
      }
      if (m === "concat") {
        for (const a of args) {
          if (a !== null && typeof a === "object" && toLen(a.length) > MAX_LEN) throw new RangeError("Array.prototype.concat of length " + a.length + " (limit " + MAX_LEN + ")");
        }
      }
      return apply(f, this, args);
    } }[m];
    hide(AP, m, wrapped);
    if (f === AP[Symbol.iterator] || (m === "values" && AP[Symbol.iterator] === f)) hide(AP, Symbol.iterator, wrapped);
  }
  const arrayFrom = Array.from;
  hide(Array, "from", { from(x, ...r) {
    if (x != null && typeof x !== "string" && toLen(x.length) > MAX_LEN) throw new RangeError("Array.from on length " + x.length + " (limit " + MAX_LEN + ")");
    return apply(arrayFrom, this, [x, ...r]);
  } }.from);
  // JSON.stringify walks arrays natively: refuse arrays no dense array could match
  // before it starts (a replacer sees each value before its elements).
  const nativeStringify = JSON.stringify;
  const guard = (k, v) => {
    if (typeof v === "object" && v !== null && Array.isArray(v) && v.length > MAX_LEN) {
      throw new RangeError("JSON.stringify of an array of length " + v.length + " (limit " + MAX_LEN + ")");
    }
    return v;
  };
  function safeStringify(value, replacer, space) {
    if (typeof replacer === "function") {
      return nativeStringify(value, function (k, v) { return guard(k, apply(replacer, this, [k, v])); }, space);
    }
    if (replacer !== null && typeof replacer === "object") {
      nativeStringify(value, guard);
      return nativeStringify(value, replacer, space);
    }
    return nativeStringify(value, guard, space);
  }
  hide(JSON, "stringify", { stringify(value, replacer, space) { return safeStringify(value, replacer, space); } }.stringify);
  // replace and replaceAll with a string replacement build their result natively:
  // refuse one that could not fit in memory before building it.
  const SP = String.prototype, MAX_STR = MAX_LEN * 8;
  const sIndexOf = SP.indexOf, sMatch = SP.match;
  for (const m of ["replace", "replaceAll"]) {
    const f = SP[m];
    hide(SP, m, { [m](search, replacement) {
      if (typeof replacement === "string" && this !== null && this !== undefined) {
        const str = String(this);
        let count = 1;
        if (typeof search === "string" && m === "replaceAll") {
          if (search.length === 0) count = str.length + 1;
          else {
            count = 0;
            for (let i = apply(sIndexOf, str, [search]); i >= 0; i = apply(sIndexOf, str, [search, i + search.length])) count++;
          }
        } else if (search instanceof RegExp && search.global) {
          count = (apply(sMatch, str, [search]) || []).length;
        }
        const refs = (replacement.match(/\$[&1-9]/g) || []).length, around = (replacement.match(/\$[`']/g) || []).length;
        const bound = str.length + count * replacement.length + refs * str.length + around * count * str.length;
        if (bound > MAX_STR) throw new RangeError("String.prototype." + m + " would build a string of up to " + bound + " characters (limit " + MAX_STR + ")");
      }
      return apply(f, this, [search, replacement]);
    } }[m]);
  }
  const TAP = Object.getPrototypeOf(Uint8Array.prototype), tsort = TAP.sort;
  const tlen = Object.getOwnPropertyDescriptor(TAP, "length").get;
  hide(TAP, "sort", { sort(cmp) {
    if (cmp === undefined && apply(tlen, this, []) > MAX_SORT) throw new RangeError("TypedArray.prototype.sort without a comparator on more than " + MAX_SORT + " elements");
    return apply(tsort, this, [cmp]);
  } }.sort);
  // No BigInt (its arithmetic runs natively for seconds on huge values; esbuild also
  // refuses BigInt literals in workflow code).
  delete globalThis.BigInt;
  delete globalThis.BigInt64Array;
  delete globalThis.BigUint64Array;
  delete DataView.prototype.getBigInt64;
  delete DataView.prototype.getBigUint64;
  delete DataView.prototype.setBigInt64;
  delete DataView.prototype.setBigUint64;
  delete globalThis.WeakRef;
  delete globalThis.FinalizationRegistry;
  delete globalThis.Atomics;
  delete globalThis.SharedArrayBuffer;

  // ---- the host bridge ----
  const JSONstringify = safeStringify;
  const call = (op, arg) => host(op, arg === undefined ? "" : JSONstringify(arg));

  // ---- determinism: workflow time, seeded randomness ----
  const OD = Date, construct = Reflect.construct;
  const now = () => +call("now");
  const DateProxy = new Proxy(OD, {
    construct(t, a, nt) { return a.length === 0 ? construct(t, [now()], nt) : construct(t, a, nt); },
    apply() { return new OD(now()).toString(); },
  });
  hide(OD, "now", function now_() { return now(); });
  hide(OD.prototype, "constructor", DateProxy);
  globalThis.Date = DateProxy;
  // xorshift128+, seeded per run by the driver (the seed is recorded in the history).
  let s0 = 0x9e3779b9 | 0, s1 = 0x243f6a88 | 0, s2 = 0xb7e15162 | 0, s3 = 0x6a09e667 | 0;
  function random() {
    // xoshiro128** on four 32-bit words.
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11);
    return (r >>> 0) / 4294967296;
  }
  function rotl(x, k) { return (x << k) | (x >>> (32 - k)); }
  hide(Math, "random", function random_() { return random(); });

  // ---- durations ----
  const UNITS = { ms: 1, msec: 1, msecs: 1, millisecond: 1, milliseconds: 1, s: 1e3, sec: 1e3, secs: 1e3, second: 1e3, seconds: 1e3,
    m: 6e4, min: 6e4, mins: 6e4, minute: 6e4, minutes: 6e4, h: 36e5, hr: 36e5, hrs: 36e5, hour: 36e5, hours: 36e5,
    d: 864e5, day: 864e5, days: 864e5, w: 6048e5, week: 6048e5, weeks: 6048e5, y: 315576e5, yr: 315576e5, yrs: 315576e5, year: 315576e5, years: 315576e5 };
  function msToNumber(v, what) {
    if (typeof v === "number") {
      if (!Number.isFinite(v) || v < 0) throw new TypeError((what || "duration") + " must be a non-negative number of milliseconds, got " + v);
      return v;
    }
    if (typeof v === "string") {
      const m = /^(-?(?:\d+)?\.?\d+) *([a-z]+)?$/i.exec(v.trim());
      const unit = m && (m[2] || "ms").toLowerCase();
      if (m && UNITS[unit] !== undefined && parseFloat(m[1]) >= 0) return parseFloat(m[1]) * UNITS[unit];
    }
    throw new TypeError("Invalid " + (what || "duration") + ": " + String(v) + " (milliseconds, or a string such as '30s' or '2 minutes')");
  }
  const optMs = (v, what) => (v === undefined || v === null ? undefined : msToNumber(v, what));

  // ---- failures ----
  class TemporalFailure extends Error {
    constructor(message, cause) { super(message ?? undefined); if (cause !== undefined) this.cause = cause; }
  }
  class ApplicationFailure extends TemporalFailure {
    constructor(message, type, nonRetryable, details, cause, nextRetryDelay) {
      super(message, cause);
      this.type = type; this.nonRetryable = nonRetryable; this.details = details; this.nextRetryDelay = nextRetryDelay;
    }
    static create(options) {
      const o = options || {};
      return new this(o.message, o.type, o.nonRetryable ?? false, o.details, o.cause, o.nextRetryDelay);
    }
    static retryable(message, type, ...details) { return new this(message, type ?? "Error", false, details); }
    static nonRetryable(message, type, ...details) { return new this(message, type ?? "Error", true, details); }
    static fromError(error, overrides) {
      let f;
      if (error instanceof ApplicationFailure) f = error;
      else {
        const rec = error !== null && typeof error === "object";
        f = ApplicationFailure.create({ message: (rec && String(error.message)) || String(error), type: (rec && (error.constructor?.name ?? error.name)) || undefined });
        f.stack = (rec && String(error.stack)) || "";
      }
      Object.assign(f, overrides);
      return f;
    }
  }
  class CancelledFailure extends TemporalFailure {
    constructor(message, details = [], cause) { super(message, cause); this.details = details; }
  }
  class TerminatedFailure extends TemporalFailure {}
  class ServerFailure extends TemporalFailure {
    constructor(message, nonRetryable, cause) { super(message, cause); this.nonRetryable = nonRetryable; }
  }
  class TimeoutFailure extends TemporalFailure {
    constructor(message, lastHeartbeatDetails, timeoutType) { super(message); this.lastHeartbeatDetails = lastHeartbeatDetails; this.timeoutType = timeoutType; }
  }
  class ActivityFailure extends TemporalFailure {
    constructor(message, activityType, activityId, retryState, identity, cause) {
      super(message, cause);
      this.activityType = activityType; this.activityId = activityId; this.retryState = retryState; this.identity = identity;
    }
  }
  class ChildWorkflowFailure extends TemporalFailure {
    constructor(namespace, execution, workflowType, retryState, cause) {
      super("Child Workflow execution failed", cause);
      this.namespace = namespace; this.execution = execution; this.workflowType = workflowType; this.retryState = retryState;
    }
  }
  class ContinueAsNew extends Error {
    constructor(args) { super("Workflow continued as new"); this.args = args; }
  }
  for (const C of [TemporalFailure, ApplicationFailure, CancelledFailure, TerminatedFailure, ServerFailure, TimeoutFailure,
    ActivityFailure, ChildWorkflowFailure, ContinueAsNew]) {
    hide(C.prototype, "name", C.name);
  }
  function isCancellation(err) {
    return err instanceof CancelledFailure ||
      ((err instanceof ActivityFailure || err instanceof ChildWorkflowFailure) && err.cause instanceof CancelledFailure);
  }

  // A failure from Go: {class, message, handle, ...fields, cause}. handle names the Go
  // error, so that a failure the workflow rethrows reaches Temporal unchanged.
  function decodeFailure(f) {
    if (!f) return undefined;
    const cause = decodeFailure(f.cause);
    let e;
    switch (f.class) {
      case "ActivityFailure": e = new ActivityFailure(f.message, f.activityType, f.activityId, f.retryState, f.identity, cause); break;
      case "ChildWorkflowFailure": e = new ChildWorkflowFailure(f.namespace, f.execution, f.workflowType, f.retryState, cause); break;
      case "CancelledFailure": e = new CancelledFailure(f.message, f.details || [], cause); break;
      case "TimeoutFailure": e = new TimeoutFailure(f.message, f.lastHeartbeatDetails, f.timeoutType); break;
      case "TerminatedFailure": e = new TerminatedFailure(f.message, cause); break;
      case "ServerFailure": e = new ServerFailure(f.message, !!f.nonRetryable, cause); break;
      default: e = new ApplicationFailure(f.message, f.type, !!f.nonRetryable, f.details || [], cause);
    }
    if (f.handle) hide(e, "__handle", f.handle);
    return e;
  }
  // encodeFailure describes a thrown value for Go.
  function encodeFailure(e, depth) {
    depth = depth || 0;
    if (e === null || typeof e !== "object" || depth > 20) {
      return { class: "Error", name: "Error", message: String(e) };
    }
    const out = { class: "Error", name: safe(() => String(e.name || "Error")), message: safe(() => (e.message === undefined ? String(e) : String(e.message))),
      stack: safe(() => (typeof e.stack === "string" ? e.stack : "")) };
    if (e.__handle) out.handle = e.__handle;
    if (e instanceof ContinueAsNew) { out.class = "ContinueAsNew"; out.args = e.args; return out; }
    if (e instanceof ApplicationFailure) {
      out.class = "ApplicationFailure";
      out.type = e.type ?? undefined; out.nonRetryable = !!e.nonRetryable;
      out.details = e.details ?? undefined;
      if (e.nextRetryDelay !== undefined && e.nextRetryDelay !== null) out.nextRetryDelay = msToNumber(e.nextRetryDelay, "nextRetryDelay");
    } else if (e instanceof CancelledFailure) {
      out.class = "CancelledFailure"; out.details = e.details;
    } else if (e instanceof TemporalFailure) {
      out.class = e.name;
    }
    if (e.cause !== undefined && e.cause !== null) out.cause = encodeFailure(e.cause, depth + 1);
    return out;
  }
  function safe(f) { try { return f(); } catch (_) { return ""; } }

  // ---- cancellation scopes, with the current scope carried across awaits ----
  const NO_PARENT = {};
  let current;
  let rootScope;
  class CancellationScope {
    #requested = false;
    constructor(options) {
      this.timeout = optMs(options?.timeout, "timeout");
      this.cancellable = options?.cancellable ?? true;
      this.cancelRequested = new Promise((_, reject) => {
        this.reject = (err) => { this.#requested = true; reject(err); };
      });
      this.cancelRequested.catch(() => undefined);
      if (options?.parent !== NO_PARENT) {
        this.parent = options?.parent || CancellationScope.current();
        if (this.parent.cancellable) {
          this.#requested = this.parent.#requested;
          this.parent.cancelRequested.catch((err) => this.reject(err));
        }
      }
    }
    get consideredCancelled() { return this.#requested && this.cancellable; }
    run(fn) {
      const prev = current;
      current = this;
      try {
        if (this.timeout) {
          sleep(this.timeout).then(() => this.cancel(), () => undefined);
        }
        return Promise.resolve(fn());
      } catch (err) {
        return Promise.reject(err);
      } finally {
        current = prev;
      }
    }
    cancel() { this.reject(new CancelledFailure(this === rootScope ? "Workflow cancelled" : "Cancellation scope cancelled")); }
    static current() { return current; }
    static cancellable(fn) { return new this({ cancellable: true }).run(fn); }
    static nonCancellable(fn) { return new this({ cancellable: false }).run(fn); }
    static withTimeout(timeout, fn) { return new this({ cancellable: true, timeout }).run(fn); }
  }
  rootScope = new CancellationScope({ cancellable: true, parent: NO_PARENT });
  current = rootScope;
  // Continuations run in the scope they were registered in. esbuild lowers async/await
  // to generators driven by then(), so this carries the scope across every await.
  const then = Promise.prototype.then;
  const inScope = (scope, f) => (typeof f !== "function" ? f : function (v) {
    const prev = current;
    current = scope;
    try { return f(v); } finally { current = prev; }
  });
  hide(Promise.prototype, "then", function then_(onFulfilled, onRejected) {
    const scope = current;
    return apply(then, this, [inScope(scope, onFulfilled), inScope(scope, onRejected)]);
  });

  // ---- commands: each one a promise the driver settles ----
  let nextSeq = 1;
  const completions = new Map(); // seq -> {resolve, reject, kind}
  let mode = "workflow"; // "query" and "validator" may not issue commands
  function assertCommands(what) {
    if (mode !== "workflow") throw new TypeError(what + " is not allowed in a " + mode + " handler: it would issue a Temporal command");
  }
  // schedule issues a command in the current scope. cancel says how a cancellation of
  // the scope ends it: "immediately" rejects at once (timers), "await" asks Temporal
  // and waits for the outcome (activities, children).
  function schedule(op, payload, cancel, kind) {
    assertCommands(op);
    const scope = current;
    return new Promise((resolve, reject) => {
      if (scope.consideredCancelled) {
        scope.cancelRequested.catch(reject);
        return;
      }
      const seq = nextSeq++;
      payload.seq = seq;
      completions.set(seq, { resolve, reject, kind });
      if (scope.cancellable) {
        scope.cancelRequested.catch((err) => {
          if (!completions.has(seq)) return;
          call("cancel", { seq });
          if (cancel === "immediately") {
            completions.delete(seq);
            reject(err);
          }
        });
      }
      call(op, payload);
    });
  }

  function sleep(ms) {
    const d = Math.max(1, msToNumber(ms, "sleep duration"));
    return schedule("timer", { ms: d }, "immediately", "timer");
  }

  function activityOptions(options, local) {
    if (options === undefined || options === null) throw new TypeError("options must be defined");
    if (options.scheduleToCloseTimeout === undefined && options.startToCloseTimeout === undefined) {
      throw new TypeError("Required either scheduleToCloseTimeout or startToCloseTimeout");
    }
    if (options.taskQueue !== undefined) throw new TypeError("taskQueue is not supported: activities run on the project's own worker");
    const r = options.retry;
    return {
      startToCloseTimeout: optMs(options.startToCloseTimeout, "startToCloseTimeout"),
      scheduleToCloseTimeout: optMs(options.scheduleToCloseTimeout, "scheduleToCloseTimeout"),
      scheduleToStartTimeout: local ? undefined : optMs(options.scheduleToStartTimeout, "scheduleToStartTimeout"),
      heartbeatTimeout: local ? undefined : optMs(options.heartbeatTimeout, "heartbeatTimeout"),
      activityId: options.activityId === undefined ? undefined : String(options.activityId),
      waitForCancellation: options.cancellationType === "WAIT_CANCELLATION_COMPLETED",
      retry: r === undefined || r === null ? undefined : {
        initialInterval: optMs(r.initialInterval, "retry.initialInterval"),
        backoffCoefficient: r.backoffCoefficient,
        maximumInterval: optMs(r.maximumInterval, "retry.maximumInterval"),
        maximumAttempts: r.maximumAttempts,
        nonRetryableErrorTypes: r.nonRetryableErrorTypes,
      },
    };
  }
  function proxy(options, local) {
    const opts = activityOptions(options, local);
    return new Proxy({}, {
      get(_, name) {
        if (typeof name !== "string") throw new TypeError("Only strings are supported for Activity types, got: " + String(name));
        const fn = function (...args) {
          return schedule("activity", { name, args, options: opts, local }, "await", "activity");
        };
        defineProperty(fn, "name", { value: name });
        return fn;
      },
    });
  }
  const proxyActivities = (options) => proxy(options, false);
  const proxyLocalActivities = (options) => proxy(options, true);

  function childOptions(workflowType, options) {
    const o = options || {};
    if (o.taskQueue !== undefined) throw new TypeError("taskQueue is not supported: child workflows run in the same project");
    if (o.namespace !== undefined) throw new TypeError("namespace is not supported: child workflows run in the same namespace");
    const r = o.retry;
    return {
      workflowType: typeof workflowType === "function" ? workflowType.name : String(workflowType),
      workflowId: o.workflowId === undefined ? uuid4() : String(o.workflowId),
      args: o.args || [],
      workflowExecutionTimeout: optMs(o.workflowExecutionTimeout, "workflowExecutionTimeout"),
      workflowRunTimeout: optMs(o.workflowRunTimeout, "workflowRunTimeout"),
      workflowTaskTimeout: optMs(o.workflowTaskTimeout, "workflowTaskTimeout"),
      parentClosePolicy: o.parentClosePolicy,
      waitForCancellation: (o.cancellationType ?? "WAIT_CANCELLATION_COMPLETED") === "WAIT_CANCELLATION_COMPLETED",
      memo: o.memo,
      retry: r === undefined || r === null ? undefined : {
        initialInterval: optMs(r.initialInterval, "retry.initialInterval"),
        backoffCoefficient: r.backoffCoefficient,
        maximumInterval: optMs(r.maximumInterval, "retry.maximumInterval"),
        maximumAttempts: r.maximumAttempts,
        nonRetryableErrorTypes: r.nonRetryableErrorTypes,
      },
    };
  }
  // startChildInner issues the child and returns its two promises: started resolves
  // with the first run id, completed with the result. Cancelling the scope asks
  // Temporal to cancel the child until its result is in.
  function startChildInner(workflowType, options) {
    assertCommands("startChild");
    const payload = childOptions(workflowType, options);
    const scope = current;
    let startResolve, startReject, doneResolve, doneReject;
    const started = new Promise((res, rej) => { startResolve = res; startReject = rej; });
    const completed = new Promise((res, rej) => { doneResolve = res; doneReject = rej; });
    started.catch(() => undefined);
    completed.catch(() => undefined);
    if (scope.consideredCancelled) {
      scope.cancelRequested.catch((err) => { startReject(err); doneReject(err); });
      return { started, completed, workflowId: payload.workflowId };
    }
    const seq = nextSeq++, resultSeq = nextSeq++;
    completions.set(seq, { resolve: startResolve, kind: "childStart", reject(err) {
      startReject(err);
      if (completions.delete(resultSeq)) doneReject(err);
    } });
    completions.set(resultSeq, { resolve: doneResolve, reject: doneReject, kind: "child" });
    if (scope.cancellable) {
      scope.cancelRequested.catch(() => { if (completions.has(resultSeq)) call("cancel", { seq }); });
    }
    payload.seq = seq;
    payload.resultSeq = resultSeq;
    call("child", payload);
    return { started, completed, workflowId: payload.workflowId };
  }
  async function startChild(workflowType, options) {
    const { started, completed, workflowId } = startChildInner(workflowType, options);
    const firstExecutionRunId = await started;
    return {
      workflowId,
      firstExecutionRunId,
      result() { return completed; },
      signal(def, ...args) {
        return schedule("signalChild", { workflowId, name: typeof def === "string" ? def : def.name, args }, "await", "signal");
      },
    };
  }
  function executeChild(workflowType, options) {
    const { started, completed } = startChildInner(workflowType, options);
    return started.then(() => completed);
  }

  function continueAsNew(...args) {
    return Promise.reject(new ContinueAsNew(args));
  }

  function uuid4() {
    const ho = (n, p) => n.toString(16).padStart(p, "0");
    const view = new DataView(new ArrayBuffer(16));
    for (let i = 0; i < 16; i += 4) view.setUint32(i, (random() * 0x100000000) >>> 0);
    view.setUint8(6, (view.getUint8(6) & 0xf) | 0x40);
    view.setUint8(8, (view.getUint8(8) & 0x3f) | 0x80);
    return `${ho(view.getUint32(0), 8)}-${ho(view.getUint16(4), 4)}-${ho(view.getUint16(6), 4)}-${ho(view.getUint16(8), 4)}-${ho(view.getUint32(10), 8)}${ho(view.getUint16(14), 4)}`;
  }

  const patches = new Map();
  function patched(patchId) {
    assertCommands("patched");
    const id = String(patchId);
    if (!patches.has(id)) patches.set(id, call("patched", { id }) === "true");
    return patches.get(id);
  }
  function deprecatePatch(patchId) {
    assertCommands("deprecatePatch");
    const id = String(patchId);
    if (!patches.has(id)) patches.set(id, call("patched", { id, deprecated: true }) === "true");
  }

  function workflowInfo() {
    const i = JSONparse(call("info"));
    i.startTime = new OD(i.startTime);
    i.runStartTime = new OD(i.runStartTime);
    return freeze(i);
  }

  const logAt = (level) => (message, attrs) => {
    call("log", { level, message: String(message), attrs: attrs === undefined ? undefined : attrs });
  };
  const log = freeze({ trace: logAt("debug"), debug: logAt("debug"), info: logAt("info"), warn: logAt("warn"), error: logAt("error") });
  const show = (args) => args.map((a) => (typeof a === "string" ? a : safe(() => JSONstringify(a)) || String(a))).join(" ");
  globalThis.console = freeze({
    log: (...a) => log.info(show(a)), info: (...a) => log.info(show(a)), debug: (...a) => log.debug(show(a)),
    warn: (...a) => log.warn(show(a)), error: (...a) => log.error(show(a)),
  });

  // ---- conditions ----
  const conditions = new Map(); // seq -> {fn, resolve, reject}
  function conditionInner(fn) {
    const scope = current;
    return new Promise((resolve, reject) => {
      if (scope.consideredCancelled) {
        scope.cancelRequested.catch(reject);
        return;
      }
      const seq = nextSeq++;
      if (scope.cancellable) {
        scope.cancelRequested.catch((err) => {
          conditions.delete(seq);
          reject(err);
        });
      }
      if (fn()) {
        resolve();
        return;
      }
      conditions.set(seq, { fn, resolve, reject });
    });
  }
  function condition(fn, timeout) {
    if (typeof fn !== "function") throw new TypeError("condition expects a function");
    if (timeout !== undefined && timeout !== null) {
      // (No async function here: the runtime is not lowered, so a native await would
      // lose the current scope.)
      const scope = new CancellationScope({ cancellable: true });
      return scope.run(() => Promise.race([sleep(timeout).then(() => false), conditionInner(fn).then(() => true)]))
        .finally(() => scope.cancel());
    }
    return conditionInner(fn);
  }

  // ---- timers as in the host ----
  const timeouts = new Map(); // id -> scope
  let nextTimeout = 1;
  globalThis.setTimeout = function setTimeout(fn, ms, ...args) {
    if (typeof fn !== "function") throw new TypeError("setTimeout expects a function");
    const id = nextTimeout++;
    const scope = new CancellationScope({ cancellable: true });
    timeouts.set(id, scope);
    scope.run(() => sleep(Math.max(1, Number(ms) || 0))).then(() => {
      if (!timeouts.delete(id)) return;
      const prev = current;
      current = scope.parent;
      try { fn(...args); } catch (err) { fail(err); } finally { current = prev; }
    }, () => undefined);
    return id;
  };
  globalThis.clearTimeout = function clearTimeout(id) {
    const scope = timeouts.get(id);
    if (scope) { timeouts.delete(id); scope.cancel(); }
  };

  // ---- handlers ----
  const defineSignal = (name) => ({ type: "signal", name: String(name) });
  const defineQuery = (name) => ({ type: "query", name: String(name) });
  const defineUpdate = (name) => ({ type: "update", name: String(name) });
  const handlers = { signal: new Map(), query: new Map(), update: new Map() };
  const registered = { signal: new Set(), query: new Set(), update: new Set() };
  const bufferedSignals = []; // {name, args} for names without a handler now
  function setHandler(def, handler, options) {
    if (!def || typeof def.name !== "string" || !handlers[def.type]) throw new TypeError("setHandler expects a definition from defineSignal, defineQuery or defineUpdate");
    assertCommands("setHandler");
    if (handler !== undefined && typeof handler !== "function") throw new TypeError("a handler must be a function or undefined");
    const map = handlers[def.type];
    if (handler === undefined) { map.delete(def.name); return; }
    map.set(def.name, { fn: handler, validator: options?.validator });
    if (!registered[def.type].has(def.name)) {
      registered[def.type].add(def.name);
      call("handler", { kind: def.type, name: def.name });
    }
    if (def.type === "signal") {
      for (let i = 0; i < bufferedSignals.length; ) {
        if (bufferedSignals[i].name === def.name) {
          const [b] = bufferedSignals.splice(i, 1);
          runSignal(map.get(def.name), b.args);
        } else i++;
      }
    }
  }
  function runSignal(h, args) {
    try {
      const r = rootScope.run(() => h.fn(...args));
      r.catch(fail);
    } catch (err) { fail(err); }
  }

  // ---- the workflow and its outcome ----
  let done = false;
  function fail(err) {
    if (done) return;
    done = true;
    call("done", { failure: encodeFailure(err) });
  }
  function succeed(value) {
    if (done) return;
    done = true;
    let json;
    try { json = value === undefined ? undefined : JSONstringify(value); } catch (err) { done = false; fail(err); return; }
    call("done", json === undefined ? {} : { value: json });
  }

  const api = freeze({
    proxyActivities, proxyLocalActivities, sleep, condition, defineSignal, defineQuery, defineUpdate, setHandler,
    executeChild, startChild, continueAsNew, workflowInfo, uuid4, patched, deprecatePatch, CancellationScope,
    isCancellation, log, ApplicationFailure, ActivityFailure, ChildWorkflowFailure, CancelledFailure, TemporalFailure,
    TimeoutFailure, TerminatedFailure, ServerFailure,
  });
  hide(globalThis, "__temporal_workflow", api);

  const parseArgs = (json) => (json ? JSONparse(json) : []);
  const rt = {
    // exports of the bundle: the default export, or else its only exported function.
    pick(mod) {
      if (mod && typeof mod.default === "function") return "default";
      const fns = mod ? Object.keys(mod).filter((k) => typeof mod[k] === "function") : [];
      if (fns.length === 1) return fns[0];
      if (fns.length === 0) return "";
      return "!" + fns.join(", ");
    },
    start(name, argsJson, seedHi, seedLo) {
      s0 = seedHi | 0; s1 = seedLo | 0; s2 = (seedHi ^ 0x5bd1e995) | 0; s3 = (seedLo ^ 0x1b873593) | 0;
      for (let i = 0; i < 8; i++) random();
      const mod = globalThis.__workflow_module;
      const fn = mod[name];
      const args = parseArgs(argsJson);
      rootScope.run(() => fn(...args)).then(succeed, fail);
    },
    settle(json) {
      const m = JSONparse(json);
      const c = completions.get(m.seq);
      if (!c) return;
      completions.delete(m.seq);
      if (m.failure) {
        c.reject(decodeFailure(m.failure));
      } else {
        c.resolve(m.value === undefined ? undefined : JSONparse(m.value));
      }
    },
    signal(name, argsJson) {
      const h = handlers.signal.get(name);
      const args = parseArgs(argsJson);
      if (!h) { bufferedSignals.push({ name, args }); return; }
      runSignal(h, args);
    },
    query(name, argsJson) {
      const h = handlers.query.get(name);
      if (!h) throw new ReferenceError("Workflow did not register a handler for query " + name);
      mode = "query";
      const saved = [s0, s1, s2, s3];
      try {
        const r = h.fn(...parseArgs(argsJson));
        if (r !== null && typeof r === "object" && typeof r.then === "function") throw new TypeError("query handlers must return a value, not a promise");
        return r === undefined ? "" : JSONstringify(r);
      } finally { mode = "workflow"; [s0, s1, s2, s3] = saved; }
    },
    validate(name, argsJson) {
      const h = handlers.update.get(name);
      if (!h) throw new ReferenceError("Workflow did not register a handler for update " + name);
      if (!h.validator) return;
      mode = "validator";
      const saved = [s0, s1, s2, s3];
      try { h.validator(...parseArgs(argsJson)); } finally { mode = "workflow"; [s0, s1, s2, s3] = saved; }
    },
    update(id, name, argsJson) {
      const h = handlers.update.get(name);
      const report = (m) => call("updateDone", Object.assign({ id }, m));
      if (!h) { report({ failure: encodeFailure(new ReferenceError("Workflow did not register a handler for update " + name)) }); return; }
      rootScope.run(() => h.fn(...parseArgs(argsJson))).then(
        (v) => { let json; try { json = v === undefined ? undefined : JSONstringify(v); } catch (err) { report({ failure: encodeFailure(err) }); return; } report(json === undefined ? {} : { value: json }); },
        (err) => report({ failure: encodeFailure(err) }));
    },
    cancel() { rootScope.cancel(); },
    // conditions evaluates the blocked conditions in the order they were made and
    // resolves those that hold; it returns how many did.
    conditions() {
      let n = 0;
      for (const [seq, c] of conditions) {
        let ok;
        try { ok = c.fn(); } catch (err) { conditions.delete(seq); c.reject(err); n++; continue; }
        if (ok) { conditions.delete(seq); c.resolve(); n++; }
      }
      return n;
    },
  };
  hide(globalThis, "__rt", freeze(rt));
})
