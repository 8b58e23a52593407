package testutil

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath returns the path of a Chromium or Chrome binary, "" when
// there is none. FERRY_CHROMIUM names one explicitly.
func ChromiumPath() string {
	if p := os.Getenv("FERRY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Chromium returns ChromiumPath, or skips the test when there is none
// (fails it when FERRY_SCREENSHOTS asks for the screenshots).
func Chromium(t testing.TB) string {
	t.Helper()
	if p := ChromiumPath(); p != "" {
		return p
	}
	msg := "no Chromium installed: the browser tests of the console need one (Debian: apt-get install chromium, or set FERRY_CHROMIUM)"
	if os.Getenv("FERRY_SCREENSHOTS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Browser starts a headless Chromium at path with a fresh profile and
// returns a context for one tab; it is closed when the test ends, and its
// output logged if the test failed.
func Browser(t testing.TB, path string) context.Context {
	t.Helper()
	profile := t.TempDir() // removed after the browser is gone (cleanups run last-in first-out)
	var out SyncBuffer
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(&out),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	// Start the browser now, without a deadline on this first Run.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// Browse runs actions in the tab ctx within timeout; what names the step
// in the failure.
func Browse(t testing.TB, ctx context.Context, timeout time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Screenshot saves a full-page PNG of the page in ctx (a Browser's) to
// file, within 30 s.
func Screenshot(t testing.TB, ctx context.Context, file string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", file, len(png))
}
