package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
)

// fuzzDecoder checks decodeBody on any input: it never panics, refuses
// with a 400 problem, or accepts a body whose value survives a round trip.
func fuzzDecoder[T any](f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v T
		err := decodeBody(body, &v)
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) || p.Status != http.StatusBadRequest || p.Type == "" {
				t.Fatalf("decodeBody(%q) = %v, want a 400 problem", body, err)
			}
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("decoded %q, cannot re-encode: %v", body, err)
		}
		var w T
		if err := decodeBody(again, &w); err != nil || !reflect.DeepEqual(v, w) {
			t.Fatalf("round trip of %q: %+v != %+v (%v)", body, v, w, err)
		}
	})
}

func FuzzDecodeInsert(f *testing.F) {
	fuzzDecoder[InsertRequest](f,
		`{"delegation_id":"d1","callee_id":"agent","task_preview":"x","timeout_seconds":60}`,
		`{"delegation_id":"d1","unknown":1}`,
		`{"delegation_id":5}`,
		`{"delegation_id":"a\u0000b"}`,
		"{\"delegation_id\":\"\xff\"}",
		`{} {}`, `[]`, `null`, ``)
}

func FuzzDecodeTransition(f *testing.F) {
	fuzzDecoder[TransitionRequest](f,
		`{"to":"completed","result":"ok"}`, `{"to":1}`, `{"to":"failed","error":"x","reason":"y","extra":true}`)
}

func FuzzDecodeHeartbeats(f *testing.F) {
	fuzzDecoder[HeartbeatsRequest](f,
		`{"ids":["a","b"]}`, `{"ids":"a"}`, `{"ids":[1]}`, `{"ids":null}`, `{"IDS":["a"]}`)
}

func FuzzDecodeRetry(f *testing.F) {
	fuzzDecoder[RetryRequest](f,
		`{"delegation_id":"d1#2","callee_id":"agent","heartbeat_timeout_seconds":30,"reason":"flaky"}`,
		`{"clear_idempotency_key":true}`, `{"clear_idempotency_key":"yes"}`, `{"timeout_seconds":"60"}`,
		`{"Reason":"x"}`, `{}`)
}
