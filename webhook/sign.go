package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret, as the Standard Webhooks
// specification writes them: whsec_ then the key in standard base64.
const SecretPrefix = "whsec_"

// SecretBytes is the length of the random key of a new secret (Standard
// Webhooks asks for 24 to 64 bytes).
const SecretBytes = 32

// Header names of a delivery (Standard Webhooks).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a delivery's webhook-timestamp may be from the
// receiver's clock, either way, for Verify to accept it (the Standard
// Webhooks libraries' default): a captured delivery cannot be replayed
// later.
const DefaultTolerance = 5 * time.Minute

// NewSecret returns a new signing secret: SecretPrefix then the standard
// base64 of SecretBytes random bytes.
func NewSecret() (string, error) {
	b := make([]byte, SecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook: drawing a secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// secretKey returns the HMAC key of a secret: its base64 part, decoded.
// The error never quotes the secret.
func secretKey(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, errors.New("webhook: the secret does not start with " + SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errors.New("webhook: the secret is not " + SecretPrefix + " and the base64 of 24 to 64 bytes")
	}
	return key, nil
}

// sign is the v1 signature of a message: base64 of HMAC-SHA256, keyed by
// key, of "id.timestamp.body".
func sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Signature returns the webhook-signature header of a delivery signed with
// each of secrets: "v1,<signature>" for each, separated by spaces (during
// a secret's rotation both the new and the previous secret sign).
func Signature(secrets []string, id string, ts int64, body []byte) (string, error) {
	parts := make([]string, 0, len(secrets))
	for _, s := range secrets {
		key, err := secretKey(s)
		if err != nil {
			return "", err
		}
		parts = append(parts, "v1,"+sign(key, id, ts, body))
	}
	return strings.Join(parts, " "), nil
}

// Verification errors of Verify.
var (
	ErrMissingHeaders   = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrBadTimestamp     = errors.New("webhook: webhook-timestamp is not a Unix time in seconds")
	ErrTimestampSkew    = errors.New("webhook: webhook-timestamp is too far from now (a replay, or a clock off)")
	ErrNoMatchingSigner = errors.New("webhook: no v1 signature matches the secret")
)

// Verify checks a delivery as a receiver does, the Standard Webhooks way:
// the headers are present, webhook-timestamp is within tolerance of now
// (DefaultTolerance when 0), and one of the space-separated "v1,<base64>"
// signatures of webhook-signature equals the HMAC-SHA256, keyed by the
// base64-decoded part of secret after whsec_, of webhook-id "."
// webhook-timestamp "." body, compared in constant time. body must be the
// raw bytes received, before any JSON parsing.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if skew := math.Abs(float64(now.Unix() - ts)); skew > tolerance.Seconds() {
		return ErrTimestampSkew
	}
	key, err := secretKey(secret)
	if err != nil {
		return err
	}
	want := []byte(sign(key, id, ts, body))
	for _, s := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if ok && version == "v1" && hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return ErrNoMatchingSigner
}
