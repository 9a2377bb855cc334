package edge

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// A viewer's RTP does not go through pion's SRTP session: each viewer
// track has an SRTP context of its own, encrypts into a buffer the fan-out
// sends, with the packets of every other viewer, in one sendmmsg on the
// ICE socket (see batch.go). pion negotiates DTLS and keeps the SRTP
// session for RTCP; it does not hand out the keys, so we take them the way
// RFC 5764 defines them: the DTLS exporter (RFC 5705) over the master
// secret and both hello randoms. With this edge as the DTLS server, the
// ServerHello hook shows our random, the chosen cipher suite and SRTP
// profile, and the key log (the SSLKEYLOGFILE line, kept in memory only)
// the client's random and the master secret.

// dtlsKeys captures what the exporter needs during one viewer's handshake.
type dtlsKeys struct {
	mu           sync.Mutex
	serverRandom []byte
	clientRandom []byte
	masterSecret []byte
	suite        dtls.CipherSuiteID
	profile      dtls.SRTPProtectionProfile
}

// settings returns the viewer's settings: the server's, as DTLS server,
// capturing the handshake's secrets into k.
func (k *dtlsKeys) settings(se webrtc.SettingEngine) webrtc.SettingEngine {
	_ = se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer) // only fails for DTLSRoleAuto
	se.SetDTLSKeyLogWriter(k)
	se.SetDTLSServerHelloMessageHook(k.serverHello)
	return se
}

func (k *dtlsKeys) serverHello(m handshake.MessageServerHello) handshake.Message {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := m.Random.MarshalFixed()
	k.serverRandom = r[:]
	if m.CipherSuiteID != nil {
		k.suite = dtls.CipherSuiteID(*m.CipherSuiteID)
	}
	for _, e := range m.Extensions {
		if u, ok := e.(*extension.UseSRTP); ok && len(u.ProtectionProfiles) > 0 {
			k.profile = dtls.SRTPProtectionProfile(u.ProtectionProfiles[0])
		}
	}
	return &m
}

// Write takes the key log line "CLIENT_RANDOM <client random> <master secret>".
func (k *dtlsKeys) Write(p []byte) (int, error) {
	f := strings.Fields(string(p))
	if len(f) == 3 && f[0] == "CLIENT_RANDOM" {
		cr, err1 := hex.DecodeString(f[1])
		ms, err2 := hex.DecodeString(f[2])
		if err1 == nil && err2 == nil {
			k.mu.Lock()
			k.clientRandom, k.masterSecret = cr, ms
			k.mu.Unlock()
		}
	}
	return len(p), nil
}

var errNoDTLSKeys = errors.New("edge: the DTLS handshake's keys were not seen")

// ExportKeyingMaterial is the TLS exporter of RFC 5705 over the captured
// handshake (no context, as DTLS-SRTP uses it).
func (k *dtlsKeys) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.serverRandom) != 32 || len(k.clientRandom) != 32 || len(k.masterSecret) == 0 {
		return nil, errNoDTLSKeys
	}
	if len(context) != 0 {
		return nil, errors.New("edge: exporter context unsupported")
	}
	seed := append(append([]byte(label), k.clientRandom...), k.serverRandom...)
	return prf.PHash(k.masterSecret, seed, length, prfHash(k.suite))
}

// prfHash is the TLS 1.2 PRF hash of a cipher suite: SHA-384 for the
// *_SHA384 suites, SHA-256 for every other one DTLS 1.2 uses.
func prfHash(id dtls.CipherSuiteID) func() hash.Hash {
	if strings.HasSuffix(dtls.CipherSuiteName(id), "SHA384") {
		return sha512.New384
	}
	return sha256.New
}

// srtpContext derives this server's SRTP sending context from the
// handshake.
func (k *dtlsKeys) srtpContext() (*srtp.Context, error) {
	k.mu.Lock()
	profile := k.profile
	k.mu.Unlock()
	var p srtp.ProtectionProfile
	switch profile {
	case dtls.SRTP_AEAD_AES_128_GCM:
		p = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		p = srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		p = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return nil, fmt.Errorf("edge: SRTP profile %v not handled here", profile)
	}
	cfg := srtp.Config{Profile: p}
	if err := cfg.ExtractSessionKeysFromDTLS(k, false); err != nil {
		return nil, err
	}
	if bytes.Equal(cfg.Keys.LocalMasterKey, cfg.Keys.RemoteMasterKey) {
		return nil, errors.New("edge: degenerate SRTP keys")
	}
	return srtp.CreateContext(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, p)
}
