package sweep

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestAdaptiveWait(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := New(pool, Config{Schedule: ScheduleAdaptive, AdaptiveFloor: 100 * time.Millisecond, AdaptiveCeiling: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d := func(v time.Duration) *time.Duration { return &v }
	cases := []struct {
		name string
		res  Result
		err  error
		want time.Duration
	}{
		{"nothing in flight: ceiling", Result{}, nil, 10 * time.Second},
		{"eligible in 3s: then, plus slack", Result{NextEligibleIn: d(3 * time.Second)}, nil, 3*time.Second + 20*time.Millisecond},
		{"eligible now: floor", Result{NextEligibleIn: d(0)}, nil, 100 * time.Millisecond},
		{"eligible in an hour: ceiling", Result{NextEligibleIn: d(time.Hour)}, nil, 10 * time.Second},
		{"rows left behind: floor", Result{More: true, NextEligibleIn: d(time.Hour)}, nil, 100 * time.Millisecond},
		{"failed: floor", Result{}, errors.New("db down"), 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := s.adaptiveWait(c.res, c.err); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if _, err := New(pool, Config{AdaptiveFloor: time.Second, AdaptiveCeiling: time.Millisecond}); err == nil {
		t.Error("floor above ceiling accepted")
	}
}
