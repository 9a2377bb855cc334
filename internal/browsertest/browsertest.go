// Package browsertest drives Debian's headless Chromium from Go tests, with
// the flags a sandboxed CI machine needs (no network chatter, fake camera,
// autoplay allowed, loopback ICE candidates).
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium process.
type Browser struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// ExecPath finds Chromium. A missing browser fails the test: `make test`
// installs it, and browser tests never skip silently.
func ExecPath(t testing.TB) string {
	for _, p := range []string{os.Getenv("BACKCHANNEL_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found: run `make test`, which installs it (or set BACKCHANNEL_CHROMIUM)")
	return ""
}

// Launch starts a browser that lives until the test ends.
func Launch(t testing.TB) *Browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ExecPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		// Real host addresses instead of mDNS names in the browser's ICE
		// candidates: this machine has no mDNS responder.
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("mute-audio", true),
		// Headless tabs must not be throttled: the tests measure frame rates.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	b := &Browser{ctx: ctx, cancel: func() { cancel(); acancel() }}
	t.Cleanup(b.cancel)
	return b
}

// Context is the chromedp context of the browser's first tab.
func (b *Browser) Context() context.Context { return b.ctx }

// Page is one tab. Pages from NewUser are in separate browser contexts (their
// own cookies and storage), so they are different users to the server.
type Page struct {
	ctx    context.Context
	cancel context.CancelFunc
	t      testing.TB
}

// NewPage opens a tab in the browser's default context.
func (b *Browser) NewPage(t testing.TB) *Page {
	return b.open(t)
}

// NewUser opens a tab in a fresh browser context: another user.
func (b *Browser) NewUser(t testing.TB) *Page {
	return b.open(t, chromedp.WithNewBrowserContext())
}

func (b *Browser) open(t testing.TB, opts ...chromedp.ContextOption) *Page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, opts...)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open tab: %v", err)
	}
	p := &Page{ctx: ctx, cancel: cancel, t: t}
	t.Cleanup(cancel)
	return p
}

// Navigate loads url and waits for the load event.
func (p *Page) Navigate(url string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		p.t.Fatalf("navigate %s: %v", url, err)
	}
}

// Do runs actions with a timeout.
func (p *Page) Do(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Eval evaluates a JavaScript expression (awaiting a returned promise) and
// decodes its JSON value into T.
func Eval[T any](p *Page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// MustEval is Eval that fails the test on error.
func MustEval[T any](p *Page, expr string) T {
	p.t.Helper()
	v, err := Eval[T](p, expr)
	if err != nil {
		p.t.Fatalf("eval %q: %v", expr, err)
	}
	return v
}

// WaitFor polls the expression until it returns true or the timeout passes.
// The last evaluation error, if any, is reported.
func (p *Page) WaitFor(timeout time.Duration, expr string) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := Eval[bool](p, "Boolean("+expr+")")
		if err == nil && ok {
			return nil
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	if lastErr != nil {
		return fmt.Errorf("timed out after %v waiting for %s (last error: %w)", timeout, expr, lastErr)
	}
	return errors.New("timed out after " + timeout.String() + " waiting for " + expr)
}
