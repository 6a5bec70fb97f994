// Command prack-go-worker serves a net/http Handler behind Prack, using only
// the Go standard library and the worker API v1.
//
//	cd examples/go && go run . http://127.0.0.1:4242   (or PRACK_API=...; that is the default)
//
// No module is downloaded (GOPROXY=off works). Where $HOME is not writable,
// point GOCACHE and GOPATH at a temporary directory, as tests/test_polyglot.py
// does: GOCACHE=$(mktemp -d) GOPATH=$(mktemp -d) go build -o prack-go-worker .
//
// The loop: GET /api/v1/request long-polls for a request; the Prack
// environment becomes an *http.Request, the Handler writes into an in-memory
// ResponseWriter, and the result goes back with POST /api/v1/response on the
// same keep-alive connection. SIGTERM (or Ctrl-C) abandons an idle poll at
// once, finishes a request already taken, and exits 0.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	firstDelay = 100 * time.Millisecond // backoff after the first failure
	maxDelay   = 5 * time.Second        // and its ceiling
	// A poll lasts api.poll_timeout (5 s by default); anything far longer
	// means the connection is dead.
	callTimeout = 60 * time.Second
)

// job is a request as the worker API hands it out.
type job struct {
	Identifier  string            `json:"identifier"`
	Environment map[string]string `json:"environment"`
	Body        string            `json:"body"`
}

// answer is what we post back. Header values are lists: one header line each.
type answer struct {
	Identifier string              `json:"identifier"`
	Code       int                 `json:"code"`
	Headers    map[string][]string `json:"headers"`
	Body       string              `json:"body"`
}

type worker struct {
	api     string
	client  *http.Client
	handler http.Handler
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("go worker: ")
	api := os.Getenv("PRACK_API")
	if len(os.Args) > 1 {
		api = os.Args[1]
	}
	if api == "" {
		api = "http://127.0.0.1:4242"
	}
	api = strings.TrimRight(api, "/")
	if u, err := url.Parse(api); err != nil || u.Scheme != "http" || u.Host == "" {
		log.Fatalf("not an http:// URL: %q", api)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	w := &worker{
		api: api,
		// One idle connection is all a sequential loop needs; keep it open.
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     90 * time.Second,
		}},
		handler: newApp(),
	}
	log.Printf("pulling requests from %s", api)
	w.run(ctx)
	log.Printf("stopping")
}

func (w *worker) run(ctx context.Context) {
	delay := time.Duration(0)
	connected := false
	for ctx.Err() == nil {
		j, err := w.pull(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			connected = false
			if delay == 0 {
				delay = firstDelay
			} else if delay *= 2; delay > maxDelay {
				delay = maxDelay
			}
			log.Printf("cannot reach %s (%v); retrying in %v", w.api, err, delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		if !connected {
			log.Printf("connected to %s", w.api)
			connected = true
		}
		delay = 0
		if j != nil {
			// A request we took is answered even if SIGTERM arrives meanwhile.
			w.serve(j)
		}
	}
}

// pull long-polls for one request: (nil, nil) when none arrived in time.
// The poll is abandoned when ctx ends (SIGTERM) only until its answer
// starts: a request that answer carries is ours to serve from then on.
func (w *worker) pull(ctx context.Context) (*job, error) {
	callCtx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var answering atomic.Bool
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			if !answering.Load() {
				cancel()
			}
		case <-finished:
		}
	}()
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { answering.Store(true) }}
	callCtx = httptrace.WithClientTrace(callCtx, trace)
	req, err := http.NewRequestWithContext(callCtx, "GET", w.api+"/api/v1/request", nil)
	if err != nil {
		return nil, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var j job
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("bad request payload: %v", err)
		}
		return &j, nil
	case http.StatusNotFound: // nothing pending within the poll timeout
		return nil, nil
	default: // 503 while the server stops, or a proxy's error page
		return nil, fmt.Errorf("GET /api/v1/request: %s", resp.Status)
	}
}

// serve runs the handler on one job and posts its response.
func (w *worker) serve(j *job) {
	out := w.handle(j)
	payload, err := json.Marshal(out)
	if err != nil {
		log.Printf("%s: cannot encode the response: %v", j.Identifier, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	post := func() (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", w.api+"/api/v1/response", bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		return w.client.Do(req)
	}
	resp, err := post()
	if err != nil && ctx.Err() == nil {
		// The server closed the kept-alive connection before answering (a
		// restart, or its limits on idle connections); the transport
		// replays only idempotent calls. Once more on a new connection: a
		// post sent twice is harmless (the second gets 404).
		resp, err = post()
	}
	if err != nil {
		log.Printf("%s: posting the response failed: %v", j.Identifier, err)
		return
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// 410: the client left; 404: answered already or timed out; 400: we
		// sent something invalid (the client got 502). None is fatal.
		log.Printf("%s: response refused: %s %s", j.Identifier, resp.Status, bytes.TrimSpace(msg))
	}
}

// handle turns the Prack environment into an *http.Request, runs the
// handler and collects what it wrote. A panic becomes a 500.
func (w *worker) handle(j *job) (out answer) {
	out.Identifier = j.Identifier
	fail := func(code int, why string) answer {
		log.Printf("%s: %s", j.Identifier, why)
		text := http.StatusText(code) + "\n"
		return answer{j.Identifier, code,
			map[string][]string{"Content-Type": {"text/plain; charset=utf-8"}},
			base64.StdEncoding.EncodeToString([]byte(text))}
	}
	body, err := base64.StdEncoding.DecodeString(j.Body)
	if err != nil {
		return fail(http.StatusBadRequest, "undecodable body: "+err.Error())
	}
	req, err := toRequest(j.Environment, body)
	if err != nil {
		return fail(http.StatusBadRequest, err.Error())
	}
	rec := &recorder{header: http.Header{}}
	defer func() {
		if p := recover(); p != nil {
			out = fail(http.StatusInternalServerError, fmt.Sprintf("handler panic: %v", p))
		}
	}()
	w.handler.ServeHTTP(rec, req)
	return rec.answer(j.Identifier)
}

// toRequest builds the server-side *http.Request net/http would have made.
// Prack decodes header bytes as ISO-8859-1 so that JSON can carry them;
// latin1Bytes undoes that, so handlers see the bytes the client sent.
func toRequest(env map[string]string, body []byte) (*http.Request, error) {
	target := env["PATH_INFO"]
	if q := env["QUERY_STRING"]; q != "" {
		target += "?" + q
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, fmt.Errorf("bad target %q: %v", target, err)
	}
	proto := env["SERVER_PROTOCOL"]
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		proto, major, minor = "HTTP/1.1", 1, 1
	}
	header := http.Header{}
	for key, value := range env {
		var name string
		switch {
		case key == "CONTENT_TYPE":
			name = "Content-Type"
		case key == "CONTENT_LENGTH":
			continue // the body is complete: ContentLength says its size
		case strings.HasPrefix(key, "HTTP_"):
			name = http.CanonicalHeaderKey(strings.ReplaceAll(key[5:], "_", "-"))
		default:
			continue
		}
		header[name] = append(header[name], latin1Bytes(value))
	}
	host := header.Get("Host")
	if host == "" {
		host = net.JoinHostPort(env["SERVER_NAME"], env["SERVER_PORT"])
	}
	req := &http.Request{
		Method:        env["REQUEST_METHOD"],
		URL:           u,
		Proto:         proto,
		ProtoMajor:    major,
		ProtoMinor:    minor,
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Host:          host,
		RemoteAddr:    net.JoinHostPort(env["REMOTE_ADDR"], env["REMOTE_PORT"]),
		RequestURI:    target,
	}
	return req, nil
}

// recorder is an http.ResponseWriter that keeps the whole response.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

func (r *recorder) answer(id string) answer {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	// Like net/http: sniff a Content-Type unless the handler set one (or
	// deleted it by assigning nil).
	if _, set := r.header["Content-Type"]; !set && r.body.Len() > 0 {
		r.header.Set("Content-Type", http.DetectContentType(r.body.Bytes()))
	}
	headers := make(map[string][]string, len(r.header))
	for name, values := range r.header {
		for _, v := range values {
			headers[name] = append(headers[name], latin1String(v))
		}
	}
	return answer{id, r.code, headers, base64.StdEncoding.EncodeToString(r.body.Bytes())}
}

// latin1Bytes maps each character (all below U+0100) back to its byte.
func latin1Bytes(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return s // not from Prack's decoding: keep it as it is
		}
		b = append(b, byte(r))
	}
	return string(b)
}

// latin1String maps each byte to the character of the same number, which
// Prack encodes back to that byte on the wire.
func latin1String(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}
