package vmm

import "os"

// defaultPath is the PATH a guest-facing process gets when the caller has
// none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// childEnvKeep are the only variables a guest-facing process (the VMM, its
// network helper) inherits: it faces an attacker with root in the guest,
// so it holds nothing it does not need (no secret backend's token, no value
// an env: reference named).
var childEnvKeep = []string{"PATH", "LANG", "LC_ALL", "TZ"}

// ChildEnv is the whole environment for a guest-facing process a backend
// starts: PATH (a default when unset) and the locale and time zone when
// set; nothing else. Backends set it as exec.Cmd.Env.
func ChildEnv() []string {
	env := make([]string, 0, len(childEnvKeep))
	for _, k := range childEnvKeep {
		v, ok := os.LookupEnv(k)
		if k == "PATH" && (!ok || v == "") {
			v, ok = defaultPath, true
		}
		if ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
