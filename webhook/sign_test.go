package webhook_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/webhook"
)

// The example of the Standard Webhooks specification's reference
// libraries: this secret, id, timestamp and body sign to this signature.
func TestSignatureMatchesTheSpecificationExample(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	const id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	const ts = int64(1614265330)
	body := []byte(`{"test": 2432232314}`)
	got, err := webhook.Signature([]string{secret}, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
	h := http.Header{}
	h.Set(webhook.HeaderID, id)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(webhook.HeaderSignature, got)
	if err := webhook.Verify(secret, h, body, time.Unix(ts, 0), 0); err != nil {
		t.Fatal(err)
	}
}

func TestNewSecret(t *testing.T) {
	t.Parallel()
	a, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := webhook.NewSecret()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	if !strings.HasPrefix(a, "whsec_") || err != nil || len(key) < 24 || a == b {
		t.Fatalf("secrets %q %q: key %d bytes, %v", a, b, len(key), err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	oldSecret, _ := webhook.NewSecret()
	newSecret, _ := webhook.NewSecret()
	body := []byte(`{"type":"delegation.stuck"}`)
	now := time.Unix(1_800_000_000, 0)
	headers := func(id string, ts int64, secrets ...string) http.Header {
		sig, err := webhook.Signature(secrets, id, ts, body)
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
		h.Set(webhook.HeaderSignature, sig)
		return h
	}
	rotating := headers("evt_1", now.Unix(), newSecret, oldSecret)
	for _, c := range []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		want   error
	}{
		{"new secret during rotation", newSecret, rotating, body, nil},
		{"old secret during rotation", oldSecret, rotating, body, nil},
		{"other secret", newSecret, headers("evt_1", now.Unix(), oldSecret), body, webhook.ErrNoMatchingSigner},
		{"body changed", newSecret, rotating, []byte(`{"type":"delegation.completed"}`), webhook.ErrNoMatchingSigner},
		{"id changed", newSecret, func() http.Header { h := rotating.Clone(); h.Set(webhook.HeaderID, "evt_2"); return h }(), body, webhook.ErrNoMatchingSigner},
		{"too old", newSecret, headers("evt_1", now.Add(-6*time.Minute).Unix(), newSecret), body, webhook.ErrTimestampSkew},
		{"from the future", newSecret, headers("evt_1", now.Add(6*time.Minute).Unix(), newSecret), body, webhook.ErrTimestampSkew},
		{"no signature", newSecret, func() http.Header { h := rotating.Clone(); h.Del(webhook.HeaderSignature); return h }(), body, webhook.ErrMissingHeaders},
		{"bad timestamp", newSecret, func() http.Header { h := rotating.Clone(); h.Set(webhook.HeaderTimestamp, "soon"); return h }(), body, webhook.ErrBadTimestamp},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.Verify(c.secret, c.h, c.body, now, 0)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(c.secret, "whsec_")) {
				t.Fatal("the error quotes the secret")
			}
		})
	}
}
