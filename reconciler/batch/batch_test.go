package batch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestBatcherGroupsConcurrentRequests(t *testing.T) {
	release := make(chan struct{})
	var batches, biggest atomic.Int32
	b := &Batcher[int, int]{Max: 50, Run: func(_ context.Context, reqs []int) ([]int, error) {
		if batches.Add(1) == 1 {
			<-release // the first batch is in flight while the others arrive
		}
		if n := int32(len(reqs)); n > biggest.Load() {
			biggest.Store(n)
		}
		out := make([]int, len(reqs))
		for i, r := range reqs {
			out[i] = r * 2
		}
		return out, nil
	}}
	var wg sync.WaitGroup
	first := make(chan int)
	go func() {
		v, _ := b.Do(context.Background(), 1)
		first <- v
	}()
	for batches.Load() == 0 {
	}
	for i := 2; i <= 101; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := b.Do(context.Background(), i); err != nil || v != 2*i {
				t.Errorf("request %d: %d, %v", i, v, err)
			}
		}()
	}
	// Let the hundred queue behind the first batch.
	for {
		b.mu.Lock()
		n := len(b.pending)
		b.mu.Unlock()
		if n == 100 {
			break
		}
	}
	close(release)
	wg.Wait()
	if v := <-first; v != 2 {
		t.Fatalf("first request: %d", v)
	}
	if n := batches.Load(); n != 3 || biggest.Load() != 50 {
		t.Fatalf("%d batches, the biggest of %d; want 1 alone, then 2 of 50", n, biggest.Load())
	}
}

func TestBatcherErrorReachesEveryRequestOfTheBatch(t *testing.T) {
	boom := errors.New("boom")
	b := &Batcher[int, int]{Run: func(context.Context, []int) ([]int, error) { return nil, boom }}
	if _, err := b.Do(context.Background(), 1); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}
