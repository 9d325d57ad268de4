package auth_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

func TestCreateAuthenticateRevoke(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	s := auth.NewStore(db.Pool)

	tok, err := s.Create(ctx, "billing-svc", auth.RoleCaller, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, auth.TokenPrefix) || len(tok) != len(auth.TokenPrefix)+43 {
		t.Fatalf("token shape %q", tok)
	}
	// Only the hash is stored.
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM api_tokens WHERE position(convert_to($1, 'UTF8') in hash) > 0 OR name = $1`, tok).Scan(&n); err != nil || n != 0 {
		t.Fatalf("token stored in clear: %d, %v", n, err)
	}
	p, err := s.Authenticate(ctx, tok)
	if err != nil || p != (auth.Principal{TokenName: "billing-svc", Role: auth.RoleCaller, ID: "billing"}) {
		t.Fatalf("authenticate = %+v, %v", p, err)
	}
	if p.Actor() != "api:billing-svc" {
		t.Fatalf("actor %q", p.Actor())
	}
	if _, err := s.Create(ctx, "billing-svc", auth.RoleReader, ""); !errors.Is(err, auth.ErrTokenExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	for _, bad := range []string{"", "swp_", tok + "x", tok[:len(tok)-1] + "A", "Bearer " + tok, strings.ToUpper(tok), "swp_" + strings.Repeat("!", 43)} {
		if bad == tok {
			continue
		}
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("Authenticate(%q) = %v", bad, err)
		}
	}
	if err := s.Revoke(ctx, "billing-svc"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked token: %v", err)
	}
	if err := s.Revoke(ctx, "billing-svc"); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if err := s.Revoke(ctx, "nobody"); !errors.Is(err, auth.ErrTokenNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	ts, err := s.List(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "billing-svc" || ts[0].RevokedAt == nil || ts[0].Principal != "billing" {
		t.Fatalf("list = %+v, %v", ts, err)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	s := auth.NewStore(db.Pool)
	for _, c := range []struct {
		name, principal, field string
		role                   auth.Role
	}{
		{"", "", "name", auth.RoleReader},
		{"has space", "", "name", auth.RoleReader},
		{"-lead", "", "name", auth.RoleReader},
		{strings.Repeat("a", 65), "", "name", auth.RoleReader},
		{"ok", "", "role", "root"},
		{"ok", "", "principal", auth.RoleCaller},
		{"ok", "", "principal", auth.RoleWorker},
		{"ok", "x", "principal", auth.RoleReader},
		{"ok", "a\x00b", "principal", auth.RoleCaller},
		{"ok", "  ", "principal", auth.RoleCaller},
		{"ok", strings.Repeat("p", 256), "principal", auth.RoleCaller},
	} {
		_, err := s.Create(context.Background(), c.name, c.role, c.principal)
		var fe *ledger.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("Create(%q, %q, %q) = %v, want a %s error", c.name, c.role, c.principal, err, c.field)
		}
	}
}

func TestScope(t *testing.T) {
	t.Parallel()
	own := ledger.Delegation{CallerID: "billing", CalleeID: "agent"}
	other := ledger.Delegation{CallerID: "search", CalleeID: "crawler"}
	caller := auth.Principal{Role: auth.RoleCaller, ID: "billing"}
	worker := auth.Principal{Role: auth.RoleWorker, ID: "agent"}
	reader := auth.Principal{Role: auth.RoleReader}
	admin := auth.Principal{Role: auth.RoleAdmin}
	for _, c := range []struct {
		name string
		got  bool
		want bool
	}{
		{"caller sees own", caller.CanSee(own), true},
		{"caller sees other", caller.CanSee(other), false},
		{"worker sees own", worker.CanSee(own), true},
		{"worker sees other", worker.CanSee(other), false},
		{"reader sees other", reader.CanSee(other), true},
		{"admin sees other", admin.CanSee(other), true},
		{"caller inserts own", caller.CanInsert("billing"), true},
		{"caller inserts other", caller.CanInsert("search"), false},
		{"worker inserts", worker.CanInsert("agent"), false},
		{"reader inserts", reader.CanInsert("x"), false},
		{"admin inserts", admin.CanInsert("x"), true},
		{"caller cancels own", caller.CanTransition(own, ledger.StatusFailed), true},
		{"caller completes own", caller.CanTransition(own, ledger.StatusCompleted), false},
		{"caller cancels other", caller.CanTransition(other, ledger.StatusFailed), false},
		{"worker completes own", worker.CanTransition(own, ledger.StatusCompleted), true},
		{"worker completes other", worker.CanTransition(other, ledger.StatusCompleted), false},
		{"reader transitions", reader.CanTransition(own, ledger.StatusFailed), false},
		{"admin transitions", admin.CanTransition(other, ledger.StatusStuck), true},
		{"worker beats own", worker.CanHeartbeat(own), true},
		{"worker beats other", worker.CanHeartbeat(other), false},
		{"caller beats own", caller.CanHeartbeat(own), false},
		{"reader beats", reader.CanHeartbeat(own), false},
		{"admin beats", admin.CanHeartbeat(other), true},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}
