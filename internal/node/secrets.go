package node

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// secrets are the generated credentials of an embedded node. They live in the
// data directory so that a restart keeps the same keys and viewers keep their
// identities.
type secrets struct {
	PublishKey     string `json:"publish_key"`
	OperatorKey    string `json:"operator_key"`
	IdentitySecret string `json:"identity_secret"`
}

const secretsFile = "secrets.json"

// loadSecrets reads the data directory's secrets, generating and saving any
// that are missing. An unreadable or corrupt file is an error, never silently
// replaced: that would lock out broadcasters and forget every viewer.
func loadSecrets(dataDir string) (secrets, error) {
	var s secrets
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return s, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dataDir, secretsFile)
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return s, fmt.Errorf("read %s: %w", path, err)
	default:
		if err := json.Unmarshal(raw, &s); err != nil {
			return s, fmt.Errorf("%s is corrupt (%v): fix or remove it", path, err)
		}
	}
	changed := false
	for _, f := range []*string{&s.PublishKey, &s.OperatorKey, &s.IdentitySecret} {
		if *f == "" {
			*f = randomToken(24)
			changed = true
		}
	}
	if !changed {
		return s, nil
	}
	out, _ := json.MarshalIndent(s, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return s, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return s, fmt.Errorf("save %s: %w", path, err)
	}
	return s, nil
}

// override replaces secrets with the ones configured explicitly.
func (s *secrets) override(publishKey, operatorKey, identitySecret string) {
	for _, f := range []struct {
		dst *string
		v   string
	}{{&s.PublishKey, publishKey}, {&s.OperatorKey, operatorKey}, {&s.IdentitySecret, identitySecret}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
