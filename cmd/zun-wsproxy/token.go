package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/standalone"
)

const tokenUsage = `usage:
  zun-wsproxy token create --container NAME [--exec CMD] [--ttl 5m] [--uses 1]
  zun-wsproxy token list
  zun-wsproxy token revoke ID
(each also takes --config-file, --config-dir and --data-dir)`

// tokenCommand runs "zun-wsproxy token ...": standalone mode's token CLI,
// on the same store the proxy uses.
func tokenCommand(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(tokenUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("zun-wsproxy token "+verb, flag.ContinueOnError)
	var c common
	c.register(fs)
	container := fs.String("container", "", "Docker container name or id")
	execCmd := fs.String("exec", "", "start this command in the container (split on spaces) instead of attaching")
	ttl := fs.Duration("ttl", standalone.DefaultTTL, "how long the token is valid")
	uses := fs.Int("uses", 1, "how many sessions the token may open")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	if cfg.Mode != "standalone" {
		return errors.New("tokens belong to standalone mode; in Zun mode Zun's API hands out consoles")
	}
	dialer, err := newDialer(cfg)
	if err != nil {
		return err
	}
	db, err := openTokens(context.Background(), cfg, c.dataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := standalone.New(db, dialer, cfg.Docker.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	switch verb {
	case "create":
		var cmd []string
		if *execCmd != "" {
			cmd = strings.Fields(*execCmd)
		}
		m, err := svc.Mint(ctx, standalone.MintRequest{Container: *container, Exec: cmd, TTL: *ttl, Uses: *uses})
		if err != nil {
			return err
		}
		wsURL, consoleURL := standalone.URLs(cfg.Proxy.BaseURL, m.Secret, m.Token.Name)
		kind := "attach"
		if m.Token.ExecID != "" {
			kind = "exec " + m.Token.Command
		}
		fmt.Fprintf(out, "token %s for %s (%s), valid until %s, %d use(s)\n", m.Token.ID, m.Token.Name, kind,
			m.Token.ExpiresAt.Local().Format(time.RFC3339), m.Token.UsesLeft)
		fmt.Fprintf(out, "web console:  %s\n", consoleURL)
		fmt.Fprintf(out, "websocket:    %s\n", wsURL)
		return nil
	case "list":
		ts, err := svc.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCONTAINER\tKIND\tEXPIRES\tUSES LEFT\tSTATE")
		now := time.Now()
		for _, t := range ts {
			kind, state := "attach", "valid"
			if t.ExecID != "" {
				kind = "exec " + t.Command
			}
			switch {
			case t.Revoked:
				state = "revoked"
			case !t.ExpiresAt.After(now):
				state = "expired"
			case t.UsesLeft == 0:
				state = "used"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.Name, kind, t.ExpiresAt.Local().Format(time.RFC3339), t.UsesLeft, state)
		}
		return tw.Flush()
	case "revoke":
		if fs.NArg() != 1 {
			return errors.New("usage: zun-wsproxy token revoke ID")
		}
		if err := svc.Revoke(ctx, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(out, "token %s revoked\n", fs.Arg(0))
		return nil
	}
	return fmt.Errorf("unknown token command %q\n%s", verb, tokenUsage)
}
