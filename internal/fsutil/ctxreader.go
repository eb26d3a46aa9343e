package fsutil

import (
	"context"
	"io"
)

// ContextReader returns a reader that reads from r until ctx ends and from
// then on fails with ctx.Err(), so a long io.Copy stops at its next read
// after a cancellation (Ctrl-C). A read already blocked in r is not
// interrupted.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
