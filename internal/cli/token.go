package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/ledger"
)

// tokenUsage is the usage of the token commands.
const tokenUsage = "usage: sweeper token create --name NAME --role caller|worker|reader|admin [--principal ID] [--output json] | token list | token revoke NAME"

// tokenFlags are the flags of `sweeper token create`.
type tokenFlags struct {
	name, role, principal string
}

func (t *tokenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.name, "name", "", "token create: the token's `name` (letters, digits, . _ -), its audit actor is api:NAME")
	fs.StringVar(&t.role, "role", "", "token create: `role` caller, worker, reader or admin")
	fs.StringVar(&t.principal, "principal", "", "token create: the caller_id (caller) or callee_id (worker) the token acts for")
}

// tokenLine is the --output json line of token create. Field names are a
// contract.
type tokenLine struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Principal string `json:"principal"`
	Token     string `json:"token"`
}

func (e *env) runToken(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("%s", tokenUsage)
	}
	sub, rest := args[0], args[1:]
	switch {
	case sub == "create" && len(rest) == 0:
		if e.token.name == "" || e.token.role == "" {
			return usagef("token create: --name and --role are required (%s)", tokenUsage)
		}
		if err := auth.CheckName(e.token.name); err != nil {
			return usagef("token create: --%s", err)
		}
		role := auth.Role(e.token.role)
		if !role.Valid() {
			return usagef("token create: --role must be caller, worker, reader or admin, got %q", e.token.role)
		}
	case sub == "list" && len(rest) == 0, sub == "revoke" && len(rest) == 1:
	default:
		return usagef("%s", tokenUsage)
	}

	cfg, err := e.dbConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg, e.stderr)
	defer func() { _ = log.Sync() }()
	pool, err := daemon.OpenPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := daemon.EnsureSchema(ctx, pool, cfg, zap.NewNop()); err != nil {
		return err
	}
	store := auth.NewStore(pool)

	switch sub {
	case "create":
		tok, err := store.Create(ctx, e.token.name, auth.Role(e.token.role), e.token.principal)
		var fe *ledger.FieldError
		if errors.As(err, &fe) || errors.Is(err, auth.ErrTokenExists) {
			return usagef("token create: %w", err)
		}
		if err != nil {
			return err
		}
		if e.opts.output == "json" {
			b, _ := json.Marshal(tokenLine{Name: e.token.name, Role: e.token.role, Principal: e.token.principal, Token: tok})
			fmt.Fprintln(e.stdout, string(b))
			return nil
		}
		fmt.Fprintln(e.stdout, tok)
		fmt.Fprintf(e.stderr, "created %s token %q; it is shown once: store it now (only its hash is kept)\n", e.token.role, e.token.name)
		return nil
	case "list":
		ts, err := store.List(ctx)
		if err != nil {
			return err
		}
		if e.opts.output == "json" {
			if ts == nil {
				ts = []auth.Token{}
			}
			b, _ := json.Marshal(ts)
			fmt.Fprintln(e.stdout, string(b))
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tPRINCIPAL\tCREATED\tREVOKED")
		for _, t := range ts {
			revoked := "-"
			if t.RevokedAt != nil {
				revoked = t.RevokedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.Principal, t.CreatedAt.UTC().Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	default: // revoke
		err := store.Revoke(ctx, rest[0])
		if errors.Is(err, auth.ErrTokenNotFound) {
			return usagef("token revoke: %w", err)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked token %q\n", rest[0])
		return nil
	}
}
