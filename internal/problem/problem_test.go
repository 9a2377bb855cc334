package problem

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWriteIsProblemJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, http.StatusUnauthorized, "stream key not accepted")
	if rec.Code != 401 {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		t.Fatalf("content type %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["title"] != "Unauthorized" || got["status"] != float64(401) || got["detail"] != "stream key not accepted" {
		t.Fatalf("body %v", got)
	}
}

func TestWriteRetryAndExtra(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteRetry(rec, http.StatusConflict, 1500*time.Millisecond, "not live")
	if ra := rec.Header().Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After %q", ra)
	}
	rec = httptest.NewRecorder()
	WriteDetails(rec, Details{Status: 400, Detail: "bad", Extra: map[string]any{"field": "question"}})
	var got map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &got)
	if got["field"] != "question" || got["title"] != "Bad Request" {
		t.Fatalf("body %v", got)
	}
}
