package punch

import (
	"github.com/pion/logging"
	"github.com/rs/zerolog"
)

// pionLogs adapts zerolog to pion's logging.LoggerFactory. pion logs a
// warning for routine events of a traversal attempt (lost checks, unknown
// transactions, "no candidate pairs yet"), so its levels are shifted down
// one step: Warn and Info become Debug, Debug becomes Trace, Error becomes
// Warn.
type pionLogs struct{ z zerolog.Logger }

var (
	_ logging.LoggerFactory = pionLogs{}
	_ logging.LeveledLogger = pionLogger{}
)

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.z.With().Str("pion", scope).Logger()}
}

type pionLogger struct{ z zerolog.Logger }

func (l pionLogger) Trace(msg string)                  { l.z.Trace().Msg(msg) }
func (l pionLogger) Tracef(f string, a ...interface{}) { l.z.Trace().Msgf(f, a...) }
func (l pionLogger) Debug(msg string)                  { l.z.Trace().Msg(msg) }
func (l pionLogger) Debugf(f string, a ...interface{}) { l.z.Trace().Msgf(f, a...) }
func (l pionLogger) Info(msg string)                   { l.z.Debug().Msg(msg) }
func (l pionLogger) Infof(f string, a ...interface{})  { l.z.Debug().Msgf(f, a...) }
func (l pionLogger) Warn(msg string)                   { l.z.Debug().Msg(msg) }
func (l pionLogger) Warnf(f string, a ...interface{})  { l.z.Debug().Msgf(f, a...) }
func (l pionLogger) Error(msg string)                  { l.z.Warn().Msg(msg) }
func (l pionLogger) Errorf(f string, a ...interface{}) { l.z.Warn().Msgf(f, a...) }
