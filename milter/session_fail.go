package milter

// How a session fails safe: an internal failure, an MTA gone away and an
// unknown client address each defer the message, never pass it.

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"

	gomilter "github.com/emersion/go-milter"
)

// internalErrorReply answers any internal failure: the message is deferred,
// so the client tries again later and nothing is lost or let through
// unchecked.
const internalErrorReply = "451 4.3.0 Temporary failure in the SPF filter, try again later"

// guard runs one callback so that a panic or an error becomes a tempfail
// for the message instead of a dropped connection, which the MTA would
// treat by its own default (possibly accepting the mail unchecked).
func (s *session) guard(stage string, f func() (gomilter.Response, error)) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			resp, err = s.fail(stage, v, debug.Stack()), nil
		}
	}()
	resp, err = f()
	var lost mtaGoneError
	if errors.As(err, &lost) {
		return s.mtaGone(stage, lost), nil
	}
	if err != nil {
		return s.fail(stage, err, nil), nil
	}
	return resp, nil
}

// mtaGoneError is the failure to send the MTA a change to the message:
// only the connection can fail there, so the MTA hung up or stopped
// reading (its own timeout expired, it was restarted). That is no fault
// of ours and is not counted as one. With checking set, it is a check
// abandoned because its connection closed (sessionConn.Context).
type mtaGoneError struct {
	err      error
	checking bool
}

func (e mtaGoneError) Error() string {
	if e.checking {
		return "check abandoned: " + e.err.Error()
	}
	return "sending to the MTA: " + e.err.Error()
}
func (e mtaGoneError) Unwrap() error { return e.err }

// mtaGone records a message whose MTA went away before it could be
// answered, and returns the tempfail reply, which goes nowhere but keeps
// the rule that a failed message is never passed.
func (s *session) mtaGone(stage string, err error) gomilter.Response {
	s.msg.failed = true
	s.msg.logged = true
	s.logger().LogAttrs(context.Background(), slog.LevelWarn, "spf connection lost, message not answered",
		slog.String("stage", stage),
		slog.Any("error", err),
		slog.String("queue_id", s.msg.queueID),
		slog.String("client_ip", addrString(s.conn.ip)),
		slog.String("sender", senderString(s.msg.sender)))
	return tempfailResponse()
}

// fail records an internal failure and returns the tempfail reply; the rest
// of the message (or, at connect and HELO, of the connection) is
// tempfailed too.
func (s *session) fail(stage string, cause any, stack []byte) gomilter.Response {
	s.msg.failed = true
	s.msg.logged = true
	if stage == "connect" || stage == "helo" {
		s.conn.failed = true
	}
	s.metrics().Failed(stage)
	logFailure(s.logger(), stage, cause, s.msg.queueID, s.conn.ip, s.msg.sender, stack)
	return tempfailResponse()
}

func tempfailResponse() gomilter.Response {
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), internalErrorReply)
}

// noClientAddr defers a message whose client address is unknown: the MTA
// sent none, or none that wire.ParseClientAddr reads. Checked without one, it
// would be a permerror, which the default policy accepts, whatever the
// sender's record says.
func (s *session) noClientAddr() gomilter.Response {
	s.msg.failed, s.msg.logged = true, true
	s.metrics().Failed("mail")
	s.logger().LogAttrs(context.Background(), slog.LevelError, "spf client address unknown, message deferred",
		slog.String("reason", s.conn.addrProblem),
		slog.String("queue_id", s.msg.queueID),
		slog.String("helo", s.conn.helo),
		slog.String("sender", senderString(s.msg.sender)),
		slog.String("reply", internalErrorReply))
	return tempfailResponse()
}
