package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/signalcli"
	"github.com/parleyhq/parley/phone"
)

// writeJSON prints v as one line of JSON (-o json).
func writeJSON(e *env, v any) error {
	return json.NewEncoder(e.stdout).Encode(v)
}

func cmdSendReceipt(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("sendReceipt", flag.ContinueOnError)
	var stamps int64List
	fs.Var(&stamps, "t", "the `TIMESTAMP` of a message to mark read (repeatable)")
	fs.Var(&stamps, "target-timestamp", "")
	kind := fs.String("type", "read", "receipt type (parley sends read receipts)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *kind != "read" {
		return fmt.Errorf("%w: sendReceipt: parley sends read receipts only (--type %s)", cli.ErrUsage, *kind)
	}
	if len(stamps) == 0 {
		return fmt.Errorf("%w: sendReceipt needs -t TIMESTAMP (the message's, as receive shows it)", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		sent, err := a.MarkRead(ctx, pos[0], stamps)
		if err != nil {
			return err
		}
		return reportSent(e, sent, "")
	})
}

// reportSent prints a send's outcome: the timestamp (or, with -o json,
// signal-cli's result object) when anyone got it, failures on stderr.
// It fails when nobody did.
func reportSent(e *env, sent cli.Sent, group string) error {
	failed := reportResults(e, sent.Results)
	if failed != nil && !slices.ContainsFunc(sent.Results, func(r cli.Result) bool { return r.Err == nil }) {
		return failed // nobody got it
	}
	// Somebody got it: the message exists (its timestamp identifies it in
	// receipts), and the failures were reported on stderr.
	if e.json {
		return writeJSON(e, signalcli.Results(sent, group))
	}
	fmt.Fprintln(e.stdout, sent.Timestamp)
	return nil
}

func cmdListContacts(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("listContacts", flag.ContinueOnError)
	only, err := parse(fs, args, 0, -1)
	if err != nil {
		return err
	}
	for i, n := range only {
		p, err := phone.Parse(n)
		if err != nil {
			return fmt.Errorf("%w: %q: %v", cli.ErrUsage, n, err)
		}
		only[i] = p.String()
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		cs, err := a.Contacts(ctx)
		if err != nil {
			return err
		}
		if len(only) > 0 {
			cs = slices.DeleteFunc(cs, func(c cli.Contact) bool { return !slices.Contains(only, c.Number) })
		}
		if e.json {
			return writeJSON(e, signalcli.Contacts(cs))
		}
		for _, c := range cs {
			timer := "off"
			if c.ExpireTimer > 0 {
				timer = fmt.Sprintf("%ds", c.ExpireTimer)
			}
			fmt.Fprintf(e.stdout, "Number: %s Account: %s Disappearing messages: %s\n", c.Number, c.Account, timer)
		}
		return nil
	})
}

func cmdGetUserStatus(ctx context.Context, e *env, args []string) error {
	numbers, err := parse(flag.NewFlagSet("getUserStatus", flag.ContinueOnError), args, 1, -1)
	if err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		us, err := a.UserStatuses(ctx, numbers)
		if err != nil {
			return err
		}
		if e.json {
			return writeJSON(e, signalcli.UserStatuses(us))
		}
		for _, u := range us {
			fmt.Fprintf(e.stdout, "%s: %t\n", u.Number, u.Registered)
		}
		return nil
	})
}

func cmdListAccounts(ctx context.Context, e *env, args []string) error {
	if _, err := parse(flag.NewFlagSet("listAccounts", flag.ContinueOnError), args, 0, 0); err != nil {
		return err
	}
	numbers, err := cli.Accounts(e.opts.Dir)
	if err != nil {
		return err
	}
	if e.json {
		out := make([]map[string]string, 0, len(numbers))
		for _, n := range numbers {
			out = append(out, map[string]string{"number": n})
		}
		return writeJSON(e, out)
	}
	for _, n := range numbers {
		fmt.Fprintln(e.stdout, "Number:", n)
	}
	return nil
}

// int64List collects a repeatable integer flag.
type int64List []int64

func (l *int64List) String() string { return fmt.Sprint(*l) }
func (l *int64List) Set(v string) error {
	var x int64
	if _, err := fmt.Sscan(v, &x); err != nil || x <= 0 {
		return fmt.Errorf("%q is not a timestamp", v)
	}
	*l = append(*l, x)
	return nil
}
