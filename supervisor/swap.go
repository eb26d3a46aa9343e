package supervisor

import (
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// swapState is this boot's share of the secret swap (--secret-egress):
// the placeholders the guest holds and the CA certificate it trusts.
type swapState struct {
	placeholders []channel.Placeholder
	caCert       []byte
}

// prepareSwap loads the workspace CA and returns the network's swap
// (conduit.NewSwap), whose values this supervisor resolves per request,
// recording each access in the audit log before the value leaves; nil
// when no secret is declared with --secret-egress.
func (s *supSecrets) prepareSwap(w *wsdir.Dir) (*vmm.Swap, error) {
	if len(s.cfg.Egress()) == 0 {
		return nil, nil
	}
	cert, key, err := w.EgressCA()
	if err != nil {
		return nil, err
	}
	src := &conduit.SwapSource{Decls: s.cfg.Declarations, Env: s.env, Limit: conduit.NewSwapLimiter(), Logf: s.lg.Printf,
		Check: func() error {
			err := s.audit.check()
			if err != nil && !s.auditGone.Swap(true) {
				s.lg.Printf("secret swap refused: the audit log %s was removed or replaced (every later use is refused too; logged once)", s.audit.path)
			}
			return err
		}}
	if l := s.audit.logOrNil(); l != nil {
		src.Record = l.Append
	}
	sw, phs, err := conduit.NewSwap(s.cfg.Declarations, cert, key, src)
	if err != nil {
		clear(key)
		return nil, err
	}
	s.swap = &swapState{placeholders: phs, caCert: cert}
	return sw, nil
}
