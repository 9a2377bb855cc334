package rtc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// LoggerFactory adapts slog to pion's logging interface. Pion is chatty and
// logs remote peers' mistakes as its own errors, so its levels are shifted
// down one step: pion Info becomes slog Debug, Warn becomes Info and Error
// becomes Warn. Trace is dropped.
func LoggerFactory(l *slog.Logger) logging.LoggerFactory {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return slogFactory{l: l}
}

type slogFactory struct{ l *slog.Logger }

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{l: f.l.With("pion", scope)}
}

type slogLeveled struct{ l *slog.Logger }

func (s *slogLeveled) log(level slog.Level, msg string) {
	s.l.Log(context.Background(), level, msg)
}

func (s *slogLeveled) logf(level slog.Level, format string, args ...any) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (s *slogLeveled) Trace(string)          {}
func (s *slogLeveled) Tracef(string, ...any) {}

func (s *slogLeveled) Debug(msg string) { s.log(slog.LevelDebug-4, msg) }
func (s *slogLeveled) Debugf(format string, args ...any) {
	s.logf(slog.LevelDebug-4, format, args...)
}
func (s *slogLeveled) Info(msg string)                  { s.log(slog.LevelDebug, msg) }
func (s *slogLeveled) Infof(format string, args ...any) { s.logf(slog.LevelDebug, format, args...) }
func (s *slogLeveled) Warn(msg string)                  { s.log(slog.LevelInfo, msg) }
func (s *slogLeveled) Warnf(format string, args ...any) { s.logf(slog.LevelInfo, format, args...) }
func (s *slogLeveled) Error(msg string)                 { s.log(slog.LevelWarn, msg) }
func (s *slogLeveled) Errorf(format string, args ...any) {
	s.logf(slog.LevelWarn, format, args...)
}
