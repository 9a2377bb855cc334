package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretsPersistAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := loadSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.PublishKey == "" || first.OperatorKey == "" || first.IdentitySecret == "" || first.PublishKey == first.OperatorKey {
		t.Fatalf("generated %+v", first)
	}
	st, err := os.Stat(filepath.Join(dir, secretsFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secrets file mode %v, want 0600", st.Mode().Perm())
	}
	again, err := loadSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatalf("restart changed secrets: %+v → %+v", first, again)
	}
}

func TestCorruptSecretsAreAnErrorNotReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, secretsFile)
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecrets(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err = %v, want a corrupt-file error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "{not json" {
		t.Fatal("the corrupt file was overwritten")
	}
}
