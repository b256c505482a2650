package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
)

// replayCommand plays a session recording in the terminal.
func replayCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("zun-wsproxy replay", flag.ContinueOnError)
	speed := fs.Float64("speed", 1, "playback speed (2: twice as fast)")
	maxWait := fs.Duration("max-wait", 2*time.Second, "longest pause between two outputs (0: as recorded)")
	raw := fs.Bool("raw", false, "write the recorded output at once, without its timing")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: zun-wsproxy replay [--speed N] [--max-wait D] [--raw] FILE.cast")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("replay takes one recording file")
	}
	if *speed <= 0 {
		return errors.New("--speed must be above 0")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	o := recording.PlayOptions{Speed: *speed, MaxWait: *maxWait}
	if *raw {
		o = recording.PlayOptions{}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return recording.Play(ctx, f, stdout, o)
}
