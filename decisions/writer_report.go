package decisions

import "time"

// maxCauses bounds the distinct causes remembered for rate-limiting their
// log lines: a cause is a handful of error texts in practice, but the
// texts come from the system.
const maxCauses = 16

// cause is one distinct cause of lost records or of a problem with the
// file, rate-limited in the log on its own.
type cause struct {
	reason string // "" for a problem that loses nothing
	err    string
	lost   uint64 // since its last line
	logged time.Time
}

// lose counts n records lost for reason (an index of lostBy) and err,
// and reports them.
func (w *Writer) lose(reason int, err error, n uint64) {
	if n == 0 {
		return
	}
	w.lostBy[reason].Add(n)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	w.cause(lostReasons[reason], msg).lost += n
	w.report(false)
}

// queueFullError is the cause given for records lost to a full queue.
const queueFullError = "queue full: the disk is slower than the mail"

// report logs the records lost since each cause's last line: a cause
// never logged at once, another at most once per ErrorInterval, every
// one when final.
func (w *Writer) report(final bool) {
	// Write counts what it loses on the sessions' goroutines; it is given
	// to its cause here.
	if q := w.lostBy[lostQueueFull].Load(); q != w.queueSeen {
		w.cause(LostQueueFull, queueFullError).lost += q - w.queueSeen
		w.queueSeen = q
	}
	if c := w.lostBy[lostClosed].Load(); c != w.closedSeen {
		w.cause(LostClosed, "written after the decision log was closed").lost += c - w.closedSeen
		w.closedSeen = c
	}
	now := time.Now()
	for _, c := range w.causes {
		if final || c.logged.IsZero() || now.Sub(c.logged) >= w.settings.ErrorInterval {
			w.logLost(c, now)
		}
	}
}

// logLost logs what c lost since its last line, if anything.
func (w *Writer) logLost(c *cause, now time.Time) {
	if c.lost == 0 {
		return
	}
	w.log.Load().Error("decision log records lost", "path", w.opts.Path, "reason", c.reason,
		"lost", c.lost, "lost_total", w.Lost(), "error", c.err)
	c.lost, c.logged = 0, now
}

// problem logs a problem with the file: at once for a new cause, at most
// once per ErrorInterval for one already logged. When !logNow the caller
// reports err itself, and the cause only counts as logged.
func (w *Writer) problem(reason string, err error, msg string, logNow bool) {
	c := w.cause(reason, err.Error())
	if !c.logged.IsZero() && time.Since(c.logged) < w.settings.ErrorInterval {
		return
	}
	if logNow {
		w.log.Load().Error(msg, "path", w.opts.Path, "error", err.Error())
	}
	c.logged = time.Now()
}

// cause finds or adds the cause of reason and err. Causes idle for an
// ErrorInterval are forgotten, since a new line for them would be due
// anyway; should more than maxCauses be live, what they hold is logged
// and they are all forgotten.
func (w *Writer) cause(reason, err string) *cause {
	for _, c := range w.causes {
		if c.reason == reason && c.err == err {
			return c
		}
	}
	live := w.causes[:0]
	for _, c := range w.causes {
		if c.lost > 0 || time.Since(c.logged) < w.settings.ErrorInterval {
			live = append(live, c)
		}
	}
	clear(w.causes[len(live):])
	w.causes = live
	if len(w.causes) >= maxCauses {
		now := time.Now()
		for _, c := range w.causes {
			w.logLost(c, now)
		}
		clear(w.causes)
		w.causes = w.causes[:0]
	}
	c := &cause{reason: reason, err: err}
	w.causes = append(w.causes, c)
	return c
}
