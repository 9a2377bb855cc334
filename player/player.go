// Package player serves the web pages embedded in the binary: the viewer
// player (/watch/{stream}: control link + WHEP), the broadcaster studio
// (/studio: go live from the browser camera over WHIP) and the operator
// console (/ops). The pages talk to the server only through its public
// interfaces (/connect, /ws, /whep, /whip, /api/v1), like any outside client.
package player

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed web
var files embed.FS

// Handler serves the pages. Mount it at "/": it answers "/", "/watch/{stream}",
// "/studio", "/ops" and "/static/…", and 404 for anything else.
func Handler() http.Handler {
	web, err := fs.Sub(files, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	static := http.StripPrefix("/static/", http.FileServer(http.FS(web)))
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, web, name)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", page("index.html"))
	mux.HandleFunc("GET /watch/{stream}", page("watch.html"))
	mux.HandleFunc("GET /studio", page("studio.html"))
	mux.HandleFunc("GET /ops", page("ops.html"))
	mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only assets: the HTML pages are served at their routes.
		if strings.HasSuffix(r.URL.Path, ".html") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	}))
	return mux
}
