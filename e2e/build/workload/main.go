// Command sre-workload is the test workload of the real node: a small static
// program whose subcommands behave the way the failures SRE-Space diagnoses
// need a real container to behave.
//
//	sre-workload sleep          do nothing until terminated
//	sre-workload alloc MIB      allocate MIB MiB, touch every page, hold it
//	sre-workload serve PORT     HTTP on PORT: /healthz answers 200 until a
//	                            POST to /fail, then 500; / names the pod
//	sre-workload get URL        GET URL, print the body; exit 0 on a 2xx
//	                            answer, 1 on any other answer or error
//
// On SIGTERM or SIGINT it exits with 128+signal, as a shell reports a
// process killed by that signal.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const usage = `usage:
  sre-workload sleep
  sre-workload alloc MIB
  sre-workload serve PORT
  sre-workload get URL
  sre-workload exit CODE [MESSAGE...]`

func main() {
	if len(os.Args) < 2 {
		fail(usage)
	}
	go exitOnSignal()
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "sleep":
		logf("sleeping until terminated")
		select {}
	case "alloc":
		alloc(intArg(args, "MIB"))
	case "serve":
		serve(intArg(args, "PORT"))
	case "get":
		if len(args) != 1 {
			fail(usage)
		}
		get(args[0])
	case "exit":
		if len(args) < 1 {
			fail(usage)
		}
		exit(args[0], args[1:])
	default:
		fail(usage)
	}
}

// held keeps the allocated memory reachable, so the garbage collector can
// never give it back.
var held [][]byte

// alloc allocates mib MiB in 1 MiB chunks and writes to every page of each,
// so the memory is really resident and charged to the container's cgroup.
// Over a memory limit, the kernel's OOM killer ends the process part way.
func alloc(mib int) {
	const chunk = 1 << 20
	page := os.Getpagesize()
	logf("allocating %d MiB", mib)
	for i := 1; i <= mib; i++ {
		b := make([]byte, chunk)
		for off := 0; off < chunk; off += page {
			b[off] = byte(i)
		}
		held = append(held, b)
		if i%8 == 0 || i == mib {
			logf("resident: %d MiB", i)
		}
	}
	logf("allocated %d MiB; holding it until terminated", mib)
	select {}
}

// serve answers on port: /healthz is 200 until someone POSTs /fail, then
// 500 for good (the container must be restarted to be healthy again); /
// says which pod answered and from where it was asked.
func serve(port int) {
	var failing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "unhealthy: told to fail", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST to make /healthz fail", http.StatusMethodNotAllowed)
			return
		}
		failing.Store(true)
		logf("told to fail by %s: /healthz answers 500 from now on", r.RemoteAddr)
		fmt.Fprintln(w, "failing")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s to %s\n", host, r.RemoteAddr)
	})
	addr := net.JoinHostPort("", strconv.Itoa(port))
	logf("serving on %s", addr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fail(err.Error())
	}
}

// get fetches url and exits 0 on a 2xx answer, 1 otherwise.
func get(url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fail(err.Error())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Printf("%s\n%s", resp.Status, body)
	if resp.StatusCode/100 != 2 {
		os.Exit(1)
	}
}

// exit writes message (a job's last words, an error the operator should
// find in the logs) to standard error and exits with code.
func exit(code string, message []string) {
	n, err := strconv.Atoi(code)
	if err != nil {
		fail(usage)
	}
	if len(message) > 0 {
		fmt.Fprintln(os.Stderr, strings.Join(message, " "))
	}
	os.Exit(n)
}

func exitOnSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	sig := (<-c).(syscall.Signal)
	logf("received %s, exiting", sig)
	os.Exit(128 + int(sig))
}

func intArg(args []string, name string) int {
	if len(args) != 1 {
		fail(usage)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		fail(fmt.Sprintf("%s must be a positive whole number, not %q", name, args[0]))
	}
	return n
}

func logf(format string, args ...any) {
	fmt.Printf("%s %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}
