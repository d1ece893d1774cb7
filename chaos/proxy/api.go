package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

const maxFaultBody = 64 << 10

// Handler is the proxy's HTTP API:
//
//	GET    /health          listen and upstream addresses, connections, faults
//	GET    /faults          the faults now set
//	POST   /faults          set a fault (its name defaults to its type)
//	PUT    /faults/{name}   set the named fault
//	DELETE /faults/{name}   clear one fault (404 when it was not set)
//	DELETE /faults          clear every fault
//
// Errors are application/problem+json.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"listen": p.Addr(), "upstream": p.Upstream(), "connections": p.Connections(), "faults": p.Faults(),
		})
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"faults": p.Faults()})
	})
	set := func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		if err := decodeJSON(r, &f); err != nil {
			writeProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		if name := r.PathValue("name"); name != "" {
			if f.Name != "" && f.Name != name {
				writeProblem(w, http.StatusBadRequest, fmt.Sprintf("name %q in the body differs from %q in the path", f.Name, name))
				return
			}
			f.Name = name
		}
		f, err := p.Set(f)
		if err != nil {
			writeProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, f)
	}
	mux.HandleFunc("POST /faults", set)
	mux.HandleFunc("PUT /faults/{name}", set)
	mux.HandleFunc("DELETE /faults/{name}", func(w http.ResponseWriter, r *http.Request) {
		if !p.Clear(r.PathValue("name")) {
			writeProblem(w, http.StatusNotFound, fmt.Sprintf("no fault named %q", r.PathValue("name")))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /faults", func(w http.ResponseWriter, _ *http.Request) {
		p.ClearAll()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// decodeJSON reads one JSON object, refusing unknown fields and bodies over
// maxFaultBody.
func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFaultBody+1))
	if err != nil {
		return fmt.Errorf("cannot read the body: %w", err)
	}
	if len(body) > maxFaultBody {
		return fmt.Errorf("body over %d bytes", maxFaultBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON: data after the object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}
