package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/signalcli"
)

// cmdUpdateGroup creates a group (without -g, printing its id) or changes
// one, as signal-cli's updateGroup does.
func cmdUpdateGroup(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("updateGroup", flag.ContinueOnError)
	id := fs.String("g", "", "the group `ID` (none: create a group)")
	fs.StringVar(id, "group-id", "", "")
	name := fs.String("n", "", "new group `NAME`")
	fs.StringVar(name, "name", "", "")
	var add, remove multiFlag
	fs.Var(&add, "m", "add `MEMBER` (repeatable)")
	fs.Var(&add, "member", "")
	fs.Var(&remove, "r", "remove `MEMBER` (repeatable)")
	fs.Var(&remove, "remove-member", "")
	expire := fs.Int64("e", -1, "disappearing-message timer in `SECONDS` (0: off)")
	fs.Int64Var(expire, "expiration", -1, "")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	gid, err := groupArg(*id)
	if err != nil {
		return err
	}
	c := cli.GroupChange{ID: gid, Add: add, Remove: remove}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "n" || f.Name == "name" {
			c.Name = name
		}
	})
	if *expire >= 0 {
		c.ExpireTimer = expire
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		g, sent, err := a.UpdateGroup(ctx, c)
		if err != nil {
			return err
		}
		if e.json {
			failed := reportResults(e, sent.Results)
			return errors.Join(writeJSON(e, signalcli.Results(sent, g.ID)), failed)
		}
		if *id == "" {
			fmt.Fprintf(e.stdout, "Created group %s\n", g.ID)
		}
		return reportResults(e, sent.Results)
	})
}

func cmdQuitGroup(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("quitGroup", flag.ContinueOnError)
	id := fs.String("g", "", "the group `ID`")
	fs.StringVar(id, "group-id", "", "")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("%w: quitGroup needs -g GROUP_ID", cli.ErrUsage)
	}
	gid, err := groupArg(*id)
	if err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		sent, err := a.QuitGroup(ctx, gid)
		if err != nil {
			return err
		}
		if e.json {
			failed := reportResults(e, sent.Results)
			return errors.Join(writeJSON(e, signalcli.Results(sent, gid)), failed)
		}
		return reportResults(e, sent.Results)
	})
}

func cmdListGroups(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("listGroups", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON output")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		gs, err := a.Groups(ctx)
		if err != nil {
			return err
		}
		if e.json {
			return writeJSON(e, signalcli.Groups(gs))
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(orEmpty(gs))
		}
		for _, g := range gs {
			var ms []string
			for _, m := range g.Members {
				if m.Number != "" {
					ms = append(ms, m.Number)
				} else {
					ms = append(ms, m.Account)
				}
			}
			fmt.Fprintf(e.stdout, "Id: %s Name: %q Active: %t Members: %s\n", g.ID, g.Name, g.Active, strings.Join(ms, ", "))
		}
		return nil
	})
}

// groupArg reads a group id as parley or signal-cli writes it ("" stays "").
func groupArg(id string) (string, error) {
	if id == "" {
		return "", nil
	}
	gid, err := signalcli.ParseGroupID(id)
	if err != nil {
		return "", fmt.Errorf("%w: -g %q: %v", cli.ErrUsage, id, err)
	}
	return gid, nil
}

// reportResults prints per-member failures and returns the first.
func reportResults(e *env, results []cli.Result) error {
	var first error
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(e.stderr, "parley: %s: %v\n", r.Recipient, r.Err)
			if first == nil {
				first = r.Err
			}
		}
	}
	if first != nil {
		return reported{first}
	}
	return nil
}
