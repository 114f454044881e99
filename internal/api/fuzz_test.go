package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecodeRequest sends arbitrary bodies to every path that decodes one
// and checks the agent answers with a well-formed API error or a success,
// never a panic or an internal error, and that what the handler accepts
// passes validation and survives a JSON round trip. The seed corpus is in
// testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []struct {
		path string
		body string
	}{
		{PathIPAM, `{"containerID":"abc","ifName":"eth0","podNamespace":"default","podName":"web"}`},
		{PathIPAM, `{"containerID":"../etc","ifName":"eth0"}`},
		{PathEndpoints, `{"containerID":"abc","ifName":"eth0","ip":"198.19.1.2","netns":"/run/netns/p","hostIfName":"gl0123456789a"}`},
		{PathEndpoints, `{"containerID":"abc","ifName":"eth0","created":"not a time"}`},
		{PathGC, `{"valid":[{"containerID":"abc","ifName":"eth0"}]}`},
		{PathGC, `{"valid":null}`},
		{PathIPAM, `{"containerID":`},
		{PathGC, `{} {}`},
	} {
		f.Add(s.path, []byte(s.body))
	}
	methods := map[string]string{PathIPAM: http.MethodPost, PathEndpoints: http.MethodPut, PathGC: http.MethodPost}
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		method, ok := methods[path]
		if !ok {
			return
		}
		fb := &fakeBackend{eps: map[Attachment]Endpoint{}}
		h := NewHandler(testLog(), fb, nil)
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusOK, http.StatusNoContent:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var e Error
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil {
				t.Fatalf("error answer %q is not an Error document: %v", rec.Body, err)
			}
			if want := map[int]string{400: CodeBadRequest, 413: CodeTooLarge}[rec.Code]; e.Code != want || e.Message == "" {
				t.Fatalf("status %d with error %+v, want code %q and a message", rec.Code, e, want)
			}
			if len(body) > MaxRequestBytes && rec.Code != http.StatusRequestEntityTooLarge && e.Code != CodeBadRequest {
				t.Fatalf("oversize body answered %d", rec.Code)
			}
			return
		default:
			t.Fatalf("status %d for %s %s %q: %s", rec.Code, method, path, body, rec.Body)
		}
		if len(body) > MaxRequestBytes {
			t.Fatalf("accepted a %d byte body", len(body))
		}
		// Accepted: the decoded value validates and round-trips.
		switch path {
		case PathIPAM:
			var got Allocation
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if err := ValidateAttachment(got.Attachment); err != nil {
				t.Fatalf("allocation for an invalid attachment %q was served: %v", got.Attachment, err)
			}
		case PathEndpoints:
			if len(fb.eps) != 1 {
				t.Fatalf("accepted upsert stored %d endpoints", len(fb.eps))
			}
			for a, ep := range fb.eps {
				if err := ValidateAttachment(a); err != nil {
					t.Fatalf("endpoint for an invalid attachment %q was stored: %v", a, err)
				}
				roundTrip(t, ep)
			}
		case PathGC:
			var req GCRequest
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("accepted body does not unmarshal: %v", err)
			}
			for _, a := range req.Valid {
				if a.ContainerID == "" || a.IfName == "" {
					t.Fatalf("accepted a GC with an empty attachment field: %+v", a)
				}
			}
			roundTrip(t, req)
		}
	})
}

func roundTrip[T any](t *testing.T, v T) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	var back T
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
	if diff := cmp.Diff(v, back); diff != "" {
		t.Fatalf("round trip (-before +after):\n%s", diff)
	}
}
