package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/content"
)

// typingEvery is how often "typing" is re-sent while the user types.
const typingEvery = 5 * time.Second

// cmdChat is an interactive conversation: the recent history, then
// incoming messages as they arrive while the user types lines to send.
// On a terminal it has line editing and sends typing indicators; with
// piped input it reads lines, which makes it scriptable.
func cmdChat(ctx context.Context, e *env, args []string) error {
	pos, err := parse(flag.NewFlagSet("chat", flag.ContinueOnError), args, 1, 1)
	if err != nil {
		return err
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	peer := pos[0]
	history, err := a.History(ctx, peer, 20)
	if err != nil {
		return err
	}

	var out io.Writer = e.stdout
	var readLine func() (string, error)
	var typing func()
	quit := func() {} // leaves the terminal without a last prompt
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return err
		}
		defer term.Restore(int(f.Fd()), old)
		t := term.NewTerminal(struct {
			io.Reader
			io.Writer
		}{f, e.stdout}, "> ")
		out, readLine = t, t.ReadLine
		quit = func() { t.SetPrompt("") }
		var last time.Time
		var pending sync.WaitGroup
		t.AutoCompleteCallback = func(line string, pos int, key rune) (string, int, bool) {
			if key != '\r' && key != '\n' && time.Since(last) > typingEvery {
				last = time.Now()
				pending.Go(func() { a.SendTyping(ctx, peer, true) })
			}
			return "", 0, false
		}
		// Before a message goes, the "typing" sent for it has arrived:
		// sends run concurrently (over the socket too), and a late one
		// would show the peer "is typing…" after the message.
		typing = func() { pending.Wait(); last = time.Time{} }
	} else {
		sc := bufio.NewScanner(e.stdin)
		sc.Buffer(make([]byte, 64<<10), content.MaxText+1)
		readLine = func() (string, error) {
			if !sc.Scan() {
				return "", errors.Join(io.EOF, sc.Err())
			}
			return sc.Text(), nil
		}
		typing = func() {}
	}
	var mu sync.Mutex
	say := func(format string, v ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\r\n", v...)
	}
	for _, h := range history {
		from := peer
		if h.Outgoing {
			from = "me"
		}
		at := time.UnixMilli(h.Timestamp).Format(time.DateTime)
		switch {
		case h.Kind == "timer":
			say("[%s] %s %s", at, from, timerText(h.ExpireTimer))
		case len(h.Files) > 0:
			say("[%s] %s: %s [files: %s]", at, from, h.Text, strings.Join(h.Files, ", "))
		default:
			say("[%s] %s: %s", at, from, h.Text)
		}
	}
	say("-- chat with %s; type a message and press Enter, /quit to leave --", peer)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recvErr := make(chan error, 1)
	go func() {
		recvErr <- receiveForever(ctx, a, cli.ReceiveOptions{Timeout: -1, SendReadReceipts: true, Handle: func(ev cli.Event) {
			say("%s", strings.ReplaceAll(formatEvent(ev), "\n", "\r\n"))
		}}, func(err error, in time.Duration) {
			// In the conversation, not the log: a log line would break the
			// terminal's prompt.
			say("-- connection lost (%v); reconnecting in %s --", err, in)
		})
	}()
	lines := make(chan string)
	inputErr := make(chan error, 1)
	go func() {
		for {
			l, err := readLine()
			if err != nil {
				inputErr <- err
				return
			}
			lines <- l
			if q := strings.TrimSpace(l); q == "/quit" || q == "/q" {
				return // reading again would print a new prompt first
			}
		}
	}()
	for {
		select {
		case err := <-recvErr:
			return err
		case err := <-inputErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case l := <-lines:
			l = strings.TrimSpace(l)
			switch {
			case l == "":
				continue
			case l == "/quit" || l == "/q":
				quit()
				return nil
			}
			typing()
			text, files := l, []string(nil)
			if path, ok := strings.CutPrefix(l, "/attach "); ok {
				text, files = "", []string{strings.TrimSpace(path)}
			}
			ts, results, err := a.Send(ctx, text, files, peer)
			if err == nil {
				err = results[0].Err
			}
			if err != nil {
				say("! not sent: %v", err)
				continue
			}
			if files != nil {
				text = "[sent " + filepath.Base(files[0]) + "]"
			}
			say("[%s] me: %s", time.UnixMilli(ts).Format(time.DateTime), text)
		}
	}
}
