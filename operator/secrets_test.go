package operator

import "testing"

func TestResolveSecrets(t *testing.T) {
	env := map[string]string{"SUBJ": "s-tok", "KEY": "sk-1", "HOOK": "h-tok"}
	getenv := func(name string) string { return env[name] }
	cfg := Config{LLM: LLMConfig{APIKeyEnv: "KEY"}, Webhook: WebhookConfig{TokenEnv: "HOOK"}}
	got := ResolveSecrets(cfg, Subject{CredentialsEnv: "SUBJ"}, getenv)
	if want := (Secrets{SubjectToken: "s-tok", LLMKey: "sk-1", WebhookToken: "h-tok"}); got != want {
		t.Errorf("ResolveSecrets = %+v; want %+v", got, want)
	}
	// A variable the configuration does not name is never read.
	if got := ResolveSecrets(Config{}, Subject{}, func(name string) string { t.Errorf("read $%s", name); return "x" }); got != (Secrets{}) {
		t.Errorf("ResolveSecrets with nothing named = %+v; want none", got)
	}
}
