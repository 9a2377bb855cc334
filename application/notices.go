package application

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/problem"
)

// NoticeRequest is the body of POST /api/v1/notices.
type NoticeRequest struct {
	Group   string `json:"group"`   // target group id: global, attribute:value, or a custom group
	Message string `json:"message"` // text shown to the viewers, ≤ 2000 characters
	Level   string `json:"level"`   // info (default) or warning
}

// NoticeAccepted is the answer to POST /api/v1/notices (202).
type NoticeAccepted struct {
	Group             string  `json:"group"`
	Off               uint64  `json:"off"`
	Ep                string  `json:"ep"`
	TS                float64 `json:"ts"`                 // send time stamped into the notice, unix ms
	ConnectionServers int     `json:"connection_servers"` // connection servers it was published to
}

// noticeMessage is a notice as group members receive it. ts (unix ms, µs
// precision) lets a client measure delivery latency.
type noticeMessage struct {
	Text  string  `json:"text"`
	Level string  `json:"level,omitempty"`
	TS    float64 `json:"ts"`
}

func (noticeMessage) MessageType() string { return control.TypeNotice }

const maxNoticeText = 2000

// postNotice serves POST /api/v1/notices: a text notice to every member of
// a group, encoded once and published as one request to each connection
// server. Operators reach any group; a broadcaster key reaches the stream
// groups it covers.
func (s *Server) postNotice(w http.ResponseWriter, r *http.Request) {
	var req NoticeRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	if err := dec.Decode(&req); err != nil {
		problem.Write(w, http.StatusBadRequest, "the body must be a JSON object {group, message, level?}: "+err.Error())
		return
	}
	if err := checkNotice(&req); err != nil {
		problem.Write(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if !mayNotice(w, r, req.Group) {
		return
	}
	if _, known := s.index.Group(req.Group); !known {
		problem.Write(w, http.StatusNotFound, fmt.Sprintf("no group %q: automatic groups are global and attribute:value with a known attribute", req.Group))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	acc, err := s.publishNotice(ctx, req)
	if err != nil {
		problem.WriteRetry(w, http.StatusServiceUnavailable, time.Second, "publishing to the connection servers failed: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(acc)
}

func checkNotice(req *NoticeRequest) error {
	switch {
	case req.Group == "":
		return errors.New("group is required")
	case req.Message == "":
		return errors.New("message is required")
	case !utf8.ValidString(req.Message) || utf8.RuneCountInString(req.Message) > maxNoticeText:
		return fmt.Errorf("message must be UTF-8 text of at most %d characters", maxNoticeText)
	}
	switch req.Level {
	case "":
		req.Level = "info"
	case "info", "warning":
	default:
		return fmt.Errorf("level %q is not info or warning", req.Level)
	}
	return nil
}

// mayNotice answers 403 unless the key may address the group: operators
// any group, broadcasters the stream groups they cover.
func mayNotice(w http.ResponseWriter, r *http.Request, group string) bool {
	p := Principal(r)
	if p.Operator() {
		return true
	}
	if stream, ok := strings.CutPrefix(group, groups.AttrStream+":"); ok && p.MayStream(stream) {
		return true
	}
	problem.Write(w, http.StatusForbidden, "your key may send notices only to the stream groups it covers (stream:<name>)")
	return false
}

// publishNotice publishes the notice, stamped with its send time, to every
// connection server.
func (s *Server) publishNotice(ctx context.Context, req NoticeRequest) (NoticeAccepted, error) {
	ts := float64(time.Now().UnixMicro()) / 1000
	data, conns, off := s.groupMessage(req.Group, noticeMessage{Text: req.Message, Level: req.Level, TS: ts}, false)
	var errs []error
	for _, c := range conns {
		if err := s.cfg.Bus.Publish(ctx, bus.Downward(c), data); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c, err))
			continue
		}
		s.metrics.sent.Inc()
	}
	acc := NoticeAccepted{Group: req.Group, Off: off, Ep: s.epoch, TS: ts, ConnectionServers: len(conns) - len(errs)}
	if len(errs) == len(conns) && len(conns) > 0 {
		return acc, errors.Join(errs...)
	}
	return acc, nil
}
