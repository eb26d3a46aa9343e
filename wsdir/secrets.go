package wsdir

import (
	"encoding/json"
	"fmt"

	"github.com/microagent-dev/microagent/secrets"
)

// secretsKey is the manifest's declarations slot for secrets.
const secretsKey = "secrets"

// SecretsConfig is what a workspace declares about secrets, as kept in its
// manifest: references, never values. They are resolved afresh at every
// start (materialized ones) or every fetch (on-demand ones).
type SecretsConfig struct {
	secrets.Declarations
	// Audit makes the supervisor record every access in the workspace's
	// audit log (audit.PathFor), which must then exist.
	Audit bool `json:"audit,omitempty"`
}

// Empty reports whether nothing is declared and auditing is off.
func (c SecretsConfig) Empty() bool {
	return len(c.Secrets) == 0 && len(c.EnvFiles) == 0 && !c.Audit
}

// HasDecls reports whether any secret or env file is declared.
func (c SecretsConfig) HasDecls() bool { return len(c.Secrets) > 0 || len(c.EnvFiles) > 0 }

// Secrets returns the workspace's secret declarations (zero when none).
func (m *Manifest) Secrets() (SecretsConfig, error) {
	var c SecretsConfig
	raw, ok := m.Declarations[secretsKey]
	if !ok {
		return c, nil
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("workspace %s: the secret declarations in its manifest are corrupt (%v): delete the workspace and create it again", m.Name, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("workspace %s: the secret declarations in its manifest are invalid (%w): delete the workspace and create it again", m.Name, err)
	}
	return c, nil
}

// SetSecrets stores c in the manifest's declarations slot.
func (m *Manifest) SetSecrets(c SecretsConfig) error {
	if c.Empty() {
		delete(m.Declarations, secretsKey)
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return &Error{Name: m.Name, Op: "encode the secret declarations", Err: err}
	}
	if m.Declarations == nil {
		m.Declarations = map[string]json.RawMessage{}
	}
	m.Declarations[secretsKey] = b
	return nil
}
