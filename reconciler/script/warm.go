package script

import (
	"context"
	"sync"
	"time"

	"modernc.org/quickjs"
)

// Warm keeps a few VMs with the runtime installed, made ahead of need by one
// goroutine, so that a new run does not spend its first workflow task making one
// (about a millisecond). The goroutine starts with the first run that takes a VM, so
// a process without TypeScript runs pays nothing. A nil *Warm makes each VM when it
// is needed.
type Warm struct {
	limits Limits
	ready  chan warmVM

	mu                        sync.Mutex
	started, stopped, filling bool
	stop                      chan struct{}
	done                      chan struct{}
}

// warmVM is a VM whose host function is bound later, to the run that takes it.
type warmVM struct {
	vm   *quickjs.VM
	bind *binding
}

type binding struct{ host quickjs.HostFunc }

func (b *binding) call(args []any) (any, error) {
	if b.host == nil {
		return checkHost(args) // the runtime installing itself
	}
	return b.host(args)
}

// NewWarm keeps up to n VMs of these limits ready.
func NewWarm(limits Limits, n int) *Warm {
	return &Warm{limits: limits, ready: make(chan warmVM, n), stop: make(chan struct{}), done: make(chan struct{})}
}

// Start allows making VMs ahead of need (from the first run on).
func (w *Warm) Start(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.started = true
	return nil
}

// Stop stops making VMs and closes those not taken. It is idempotent.
func (w *Warm) Stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	filling := w.filling
	w.mu.Unlock()
	close(w.stop)
	if filling {
		<-w.done
	}
	for {
		select {
		case v := <-w.ready:
			v.vm.Close()
		default:
			return
		}
	}
}

// kick starts the goroutine that fills the pool, once, if the pool is started.
func (w *Warm) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started && !w.stopped && !w.filling {
		w.filling = true
		go w.fill()
	}
}

func (w *Warm) fill() {
	defer close(w.done)
	for {
		b := &binding{}
		vm, err := newVM(w.limits, b.call)
		if err != nil {
			// The engine's function table is full (VMs of cached runs hold it): try
			// later; runs make their own VMs meanwhile.
			select {
			case <-w.stop:
				return
			case <-time.After(time.Second):
				continue
			}
		}
		select {
		case w.ready <- warmVM{vm: vm, bind: b}:
		case <-w.stop:
			vm.Close()
			return
		}
	}
}

// vm is a VM of limits answering host: a ready one when there is one.
func (w *Warm) vm(limits Limits, host quickjs.HostFunc) (*quickjs.VM, error) {
	if w != nil && limits == w.limits {
		w.kick()
		select {
		case v := <-w.ready:
			v.bind.host = host
			return v.vm, nil
		default:
		}
	}
	return newVM(limits, host)
}
