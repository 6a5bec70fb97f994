package main

// The application: an ordinary net/http Handler. Anything written for
// net/http (a ServeMux, a router from the standard library) can take its place.

import (
	"io"
	"net/http"
)

func newApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" { // "/" is ServeMux's catch-all pattern
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "Not found: "+r.URL.EscapedPath()+"\n")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "Hello from Go ✓\n")
	})
	// /echo answers with the request's body, byte for byte, and describes
	// the request in X-Echo-* headers.
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("X-Echo-Method", r.Method)
		h.Set("X-Echo-Path", r.URL.EscapedPath())
		h.Set("X-Echo-Query", r.URL.RawQuery)
		if v, ok := r.Header["X-Test"]; ok {
			h["X-Echo-Header"] = v
		}
		w.Write(body)
	})
	mux.HandleFunc("/cookies", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "a", Value: "1", Path: "/"})
		http.SetCookie(w, &http.Cookie{Name: "b", Value: "2", Path: "/"})
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "two cookies\n")
	})
	mux.HandleFunc("/binary", func(w http.ResponseWriter, r *http.Request) {
		all := make([]byte, 256)
		for i := range all {
			all[i] = byte(i)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(all)
	})
	return mux
}
