package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// webhookUsage is the usage of the webhook commands.
const webhookUsage = "usage: sweeper webhook create --url URL [--events stuck,failed,...] [--caller-id ID] [--callee-id ID] [--output json]" +
	" | webhook list | webhook delete ID | webhook rotate-secret ID | webhook resume ID"

// webhookFlags are the flags of `sweeper webhook create`.
type webhookFlags struct {
	url, events, callerID, calleeID string
}

func (w *webhookFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&w.url, flagURL, "", "webhook create: the destination `URL` (https unless webhooks.allow_http)")
	fs.StringVar(&w.events, flagEvents, "", "webhook create: comma-separated `statuses` whose events to send (queued, dispatched, in_progress, completed, failed, stuck); all when empty")
	fs.StringVar(&w.callerID, flagCallerID, "", "webhook create: only the delegations of this caller_id")
	fs.StringVar(&w.calleeID, flagCalleeID, "", "webhook create: only the delegations of this callee_id")
}

// webhookSecretLine is the --output json line of webhook create and
// rotate-secret: the subscription and its secret. Field names are a
// contract.
type webhookSecretLine struct {
	webhook.Subscription
	Secret string `json:"secret"`
}

func (inv *invocation) runWebhook(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("%s", webhookUsage)
	}
	sub, rest := args[0], args[1:]
	switch {
	case sub == "create" && len(rest) == 0:
		if inv.webhook.url == "" {
			return usagef("webhook create: --url is required (%s)", webhookUsage)
		}
	case sub == "list" && len(rest) == 0:
	case (sub == "delete" || sub == "rotate-secret" || sub == "resume") && len(rest) == 1:
		if err := webhook.CheckID("ID", rest[0]); err != nil {
			return usagef("webhook %s: %w", sub, err)
		}
	default:
		return usagef("%s", webhookUsage)
	}
	cfg, _, pool, closeAll, err := inv.openLedger(ctx)
	if err != nil {
		return err
	}
	defer closeAll()
	store := webhook.NewStore(pool)
	notFound := func(err error) error {
		if errors.Is(err, webhook.ErrNotFound) {
			return usagef("webhook %s: no subscription %s", sub, rest[0])
		}
		return err
	}
	switch sub {
	case "create":
		n := webhook.NewSubscription{URL: inv.webhook.url, CallerID: inv.webhook.callerID, CalleeID: inv.webhook.calleeID,
			AllowHTTP: cfg.Webhooks.AllowHTTP, AllowPrivate: cfg.Webhooks.AllowPrivateNetworks}
		if inv.webhook.events != "" {
			for e := range strings.SplitSeq(inv.webhook.events, ",") {
				n.Events = append(n.Events, ledger.Status(strings.TrimSpace(e)))
			}
		}
		created, err := store.Create(ctx, n)
		if errors.Is(err, ledger.ErrInvalid) {
			return usagef("webhook create: %w", err)
		}
		if err != nil {
			return err
		}
		return inv.printSecret("created", created)
	case "list":
		subs, err := store.List(ctx)
		if err != nil {
			return err
		}
		if inv.opts.output == "json" {
			if subs == nil {
				subs = []webhook.Subscription{}
			}
			b, _ := json.Marshal(subs)
			fmt.Fprintln(inv.stdout, string(b))
			return nil
		}
		tw := tabwriter.NewWriter(inv.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tURL\tEVENTS\tCALLER\tCALLEE\tCURSOR\tLAST DELIVERY\tREASON")
		for _, s := range subs {
			events := "all"
			if len(s.Events) > 0 {
				parts := make([]string, len(s.Events))
				for i, e := range s.Events {
					parts[i] = string(e)
				}
				events = strings.Join(parts, ",")
			}
			last := "-"
			if s.LastDeliveryAt != nil {
				last = s.LastDeliveryAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.State, s.URL, events,
				dash(s.CallerID), dash(s.CalleeID), s.Cursor, last, dash(s.StateReason))
		}
		return tw.Flush()
	case "delete":
		if err := store.Delete(ctx, rest[0]); err != nil {
			return notFound(err)
		}
		fmt.Fprintf(inv.stdout, "deleted webhook subscription %s\n", rest[0])
		return nil
	case "rotate-secret":
		rotated, err := store.RotateSecret(ctx, rest[0])
		if err != nil {
			return notFound(err)
		}
		return inv.printSecret("rotated the secret of", rotated)
	default: // resume
		s, err := store.Resume(ctx, rest[0])
		if err != nil {
			return notFound(err)
		}
		if inv.opts.output == "json" {
			b, _ := json.Marshal(s)
			fmt.Fprintln(inv.stdout, string(b))
			return nil
		}
		fmt.Fprintf(inv.stdout, "resumed webhook subscription %s from event %d\n", s.ID, s.Cursor)
		return nil
	}
}

// printSecret prints a subscription and its secret, which is shown once.
func (inv *invocation) printSecret(verb string, c webhook.Created) error {
	if inv.opts.output == "json" {
		b, _ := json.Marshal(webhookSecretLine(c))
		fmt.Fprintln(inv.stdout, string(b))
		return nil
	}
	fmt.Fprintf(inv.stdout, "%s\n%s\n", c.ID, c.Secret)
	note := ""
	if c.RotationEndsAt != nil {
		note = fmt.Sprintf("; the previous secret also signs until %s", c.RotationEndsAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(inv.stderr, "%s webhook subscription %s; its signing secret (line 2) is shown once: store it now%s\n", verb, c.ID, note)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
