package flow

import (
	"fmt"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
)

// MaxPayload is the largest payload, in bytes, that the interpreter sends: an
// activity's or a child's input, a run's result, and the arguments of a run continued
// as new (all of them together). Temporal refuses payloads over 2 MiB
// (limit.blobSize.error); the margin leaves room for the rest of the command.
const MaxPayload = 2<<20 - 64<<10

// PayloadSize is the size of p as Temporal counts it (data and metadata).
func PayloadSize(p *commonpb.Payload) int {
	if p == nil {
		return 0
	}
	n := len(p.GetData())
	for k, v := range p.GetMetadata() {
		n += len(k) + len(v)
	}
	return n
}

// encode turns v into the payload the SDK would send, so that its size is known before
// a command is issued; the SDK sends the RawValue as it is.
func encode(v any) (converter.RawValue, int, error) {
	p, err := converter.GetDefaultDataConverter().ToPayload(v)
	if err != nil {
		return converter.RawValue{}, 0, err
	}
	return converter.NewRawValue(p), PayloadSize(p), nil
}

// payload encodes what node n sends as what ("input", ...) and refuses it over
// MaxPayload with a PayloadTooLarge failure. Runs recorded before the check send the
// value as before.
func (r *run) payload(n *Node, what string, v any) (any, error) {
	if !r.extended {
		return v, nil
	}
	raw, size, err := encode(v)
	if err != nil {
		return nil, expressionError(n, what, fmt.Errorf("cannot be sent as JSON: %w", err))
	}
	if size > MaxPayload {
		return nil, tooLarge(fmt.Sprintf("node %q: its %s", n.ID, what), size)
	}
	return raw, nil
}

func tooLarge(what string, size int) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("%s is %d bytes as JSON, over the %d bytes a Temporal payload may carry", what, size, MaxPayload),
		FailurePayload, nil)
}
