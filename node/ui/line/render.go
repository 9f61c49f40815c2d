package line

import (
	"cmp"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"natchat/node/api"
	"natchat/node/ui"
	"natchat/wire"
)

// timeFormat is the time at the start of every line.
const timeFormat = "15:04"

// indent lines up the continuation lines of an event under its text.
var indent = strings.Repeat(" ", len(timeFormat)+1)

// Render returns the text of one event for people: now as 15:04, then one
// line, or several for /who and /help (the later ones indented under the
// first's text), with no line end. "" hides the event. Every string taken
// from the event goes through ui.Safe, so nothing in it can control a
// terminal.
//
//	15:04 *** mallory is online
//	15:04 <mallory> hello
//	15:04 * mallory waves
//	15:04 ✓ delivered to mallory
//	15:04 ! to zed: no one is registered as zed
//	15:04 *** leslie has joined #dev
//	15:04 [#dev] <leslie> hello room
//	15:04 [#dev] * leslie waves
//	15:04 ✓ delivered to 2/3 of #dev
//
// A history event (the answer to /history) is a header, then each entry
// as a message is shown, at its own time, our own with its state:
//
//	15:04 --- history of bob (2 messages) ---
//	14:58 → bob: lunch?  (delivered)
//	Dec 2 09:12 <bob> while you were out  (from your mailbox)
func Render(e api.Event, now time.Time) string { return RenderAs(e, now, "") }

// RenderAs is Render for the node called self, whose name starts its own
// emotes as they are sent ("→ bob: * alice waves"); with self empty they
// show without it ("→ bob: * waves").
func RenderAs(e api.Event, now time.Time, self string) string {
	if h, ok := e.(*api.HistoryEvent); ok {
		return renderHistory(h, now, self)
	}
	body := render(e, now, self)
	if body == "" {
		return ""
	}
	return now.Format(timeFormat) + " " + strings.ReplaceAll(body, "\n", "\n"+indent)
}

// s is ui.Safe, short: every string from an event goes through it.
func s(str string) string { return ui.Safe(str) }

func render(e api.Event, now time.Time, self string) string {
	switch e := e.(type) {
	case *api.Registered:
		if e.Public == "" {
			return fmt.Sprintf("*** online as %s", s(e.Name))
		}
		return fmt.Sprintf("*** online as %s; the rendezvous sees you at %s", s(e.Name), s(e.Public))
	case *api.PeerJoined:
		return fmt.Sprintf("*** %s is online", s(e.Name))
	case *api.PeerLeft:
		switch e.Reason {
		case api.ReasonQuit:
			return fmt.Sprintf("*** %s left", s(e.Name))
		case api.ReasonTimeout:
			return fmt.Sprintf("*** %s went silent and is offline", s(e.Name))
		case api.ReasonPart:
			return fmt.Sprintf("*** %s is out of sight (no room in common now)", s(e.Name))
		}
		return fmt.Sprintf("*** %s left (%s)", s(e.Name), s(e.Reason))
	case *api.Peers:
		return renderPeers(e.Peers)
	case *api.Members:
		return "*** " + ui.MembersText(e)
	case *api.RoomJoined:
		return renderRoomJoined(e, self)
	case *api.RoomLeft:
		return renderRoomLeft(e, self)
	case *api.Rooms:
		return renderRooms(e.Rooms)
	case *api.FileOffer:
		if e.To != "" {
			return fmt.Sprintf("⇪ offered %s (%s) to %s — /cancel %s", s(e.Name), sizeText(e.Size), s(e.To), s(e.ID))
		}
		return fmt.Sprintf("⇩ %s offers %s (%s, sha256 %.16s…) — /accept %s or /reject %s",
			s(e.From), s(e.Name), sizeText(e.Size), s(e.SHA256), s(e.ID), s(e.ID))
	case *api.FileProgress:
		return renderFileProgress(e)
	case *api.FileDone:
		return fmt.Sprintf("✓ file %s done: %s", s(e.ID), s(e.Path))
	case *api.FileFailed:
		return fmt.Sprintf("! file %s failed: %s", s(e.ID), s(e.Reason))
	case *api.Sent:
		text := s(e.Text)
		if e.Kind == api.KindEmote {
			text = emote(self, e.Text)
		}
		if e.Resumed {
			return fmt.Sprintf("→ %s: %s  (sending again: not delivered last time)", s(e.To), text)
		}
		return fmt.Sprintf("→ %s: %s", s(e.To), text)
	case *api.Delivered:
		if e.Room != "" && e.Members != "" {
			return fmt.Sprintf("✓ delivered to %s of %s", s(e.Members), s(e.Room))
		}
		return fmt.Sprintf("✓ delivered to %s", s(e.To))
	case *api.Stored:
		return fmt.Sprintf("✉ %sstored for %s, who is away", inRoom(e.Room, e.To), s(e.To))
	case *api.Expired:
		return fmt.Sprintf("! %sto %s: a stored message expired unread", inRoom(e.Room, e.To), s(e.To))
	case *api.Mailbox:
		if e.Count == 1 {
			return "*** 1 message waited for you"
		}
		return fmt.Sprintf("*** %d messages waited for you", e.Count)
	case *api.Deregistered:
		return "*** offline (messages to you wait in your mailbox); /reg to come back"
	case *api.Message:
		line := fmt.Sprintf("<%s> %s", s(e.From), s(e.Text))
		if e.Kind == api.KindEmote {
			line = emote(e.From, e.Text)
		}
		if e.Room != "" {
			line = fmt.Sprintf("[%s] %s", s(e.Room), line)
		}
		if e.Via == api.ViaMailbox {
			return fmt.Sprintf("%s  (sent %s)", line, sentWhen(e.SentTS, now))
		}
		return line
	case *api.PathChanged:
		return renderPath(e)
	case *api.Error:
		return renderError(e)
	case *api.Fingerprint:
		switch {
		case e.Self:
			return fmt.Sprintf("*** your fingerprint: %s", s(e.Fingerprint))
		case e.Pinned:
			return fmt.Sprintf("*** %s's fingerprint: %s (pinned)", s(e.Name), s(e.Fingerprint))
		}
		return fmt.Sprintf("*** %s's fingerprint: %s (offered by the rendezvous; not pinned yet)", s(e.Name), s(e.Fingerprint))
	case *api.Trusted:
		return fmt.Sprintf("*** %s is trusted with the key of fingerprint %s", s(e.Name), s(e.Fingerprint))
	case *api.EventsDropped:
		what := "updates"
		if e.Count == 1 {
			what = "update"
		}
		return fmt.Sprintf("! %d presence and path %s skipped while the screen was behind; /who shows who is online", e.Count, what)
	case *api.Help:
		return renderHelp(e.Commands)
	case *api.NetCheck:
		return renderNetCheck(e, now)
	}
	return ""
}

// renderHistory renders a history event: a header line at now, then one
// line per entry at the entry's own time (its date too when not today).
func renderHistory(h *api.HistoryEvent, now time.Time, self string) string {
	head := now.Format(timeFormat) + " "
	switch {
	case h.Conv == "" && len(h.Entries) == 0:
		return head + "--- no history yet ---"
	case len(h.Entries) == 0:
		return head + fmt.Sprintf("--- no history of %s ---", s(h.Conv))
	}
	var b strings.Builder
	b.WriteString(head + fmt.Sprintf("--- history of %s (%s) ---", s(h.Conv), plural(len(h.Entries), "message")))
	for _, e := range h.Entries {
		b.WriteString("\n")
		if e.TS.IsZero() {
			b.WriteString(strings.Repeat("?", len(timeFormat)))
		} else {
			b.WriteString(sentWhen(e.TS, now))
		}
		b.WriteString(" " + historyEntry(h.Conv, e, self))
	}
	return b.String()
}

// historyEntry renders one history entry of conversation conv as its
// message or sent event is rendered, with our own message's state.
func historyEntry(conv string, e api.HistoryEntry, self string) string {
	if e.Out {
		text := s(e.Text)
		if e.Kind == api.KindEmote {
			text = emote(self, e.Text)
		}
		state := s(e.State)
		if e.State == api.StateFailed && e.Reason != "" {
			state += ": " + s(e.Reason)
		}
		if state == "" {
			return fmt.Sprintf("→ %s: %s", s(conv), text)
		}
		return fmt.Sprintf("→ %s: %s  (%s)", s(conv), text, state)
	}
	line := fmt.Sprintf("<%s> %s", s(e.From), s(e.Text))
	if e.Kind == api.KindEmote {
		line = emote(e.From, e.Text)
	}
	if wire.IsRoom(conv) {
		line = fmt.Sprintf("[%s] %s", s(conv), line)
	}
	if e.Via == api.ViaMailbox {
		line += "  (from your mailbox)"
	}
	return line
}

// renderNetCheck renders /netcheck's answer:
//
//	*** netcheck: public 203.0.113.5:4000, 203.0.113.5:4001
//	      mapping: endpoint-dependent (peers will mostly be relayed)
//	      bob    direct  198.51.100.3:5000  12.5 ms  since 14:59
func renderNetCheck(e *api.NetCheck, now time.Time) string {
	var b strings.Builder
	b.WriteString("*** netcheck: public ")
	if len(e.Public) == 0 {
		b.WriteString("unknown (no STUN answer)")
	}
	for i, p := range e.Public {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s(p))
	}
	b.WriteString("\n  mapping: " + s(e.Mapping))
	var notes []string
	switch e.Mapping {
	case api.MappingIndependent:
		notes = append(notes, "hole punching works")
	case api.MappingDependent:
		notes = append(notes, "peers will mostly be relayed")
	}
	if e.Detail != "" {
		notes = append(notes, s(e.Detail))
	}
	if len(notes) > 0 {
		b.WriteString(" (" + strings.Join(notes, "; ") + ")")
	}
	if len(e.Peers) == 0 {
		b.WriteString("\n  no peers")
		return b.String()
	}
	nameW, pathW, remoteW := 0, 0, 0
	for _, p := range e.Peers {
		nameW = max(nameW, utf8.RuneCountInString(s(p.Name)))
		pathW = max(pathW, utf8.RuneCountInString(s(p.Path)))
		remoteW = max(remoteW, utf8.RuneCountInString(s(cmp.Or(p.Remote, "-"))))
	}
	for _, p := range e.Peers {
		name, path, remote := s(p.Name), s(p.Path), s(cmp.Or(p.Remote, "-"))
		row := fmt.Sprintf("  %s%s  %s%s  %s%s", name, pad(nameW, name), path, pad(pathW, path), remote, pad(remoteW, remote))
		if p.RTTMS > 0 {
			row += fmt.Sprintf("  %.1f ms", p.RTTMS)
		}
		if !p.Changed.IsZero() {
			row += "  since " + sentWhen(p.Changed, now)
		}
		b.WriteString("\n" + strings.TrimRight(row, " "))
	}
	return b.String()
}

// pad returns the spaces that fill str to width runes.
func pad(width int, str string) string {
	return strings.Repeat(" ", max(0, width-utf8.RuneCountInString(str)))
}

// inRoom prefixes what is said about one member's copy of a room message
// ("[#dev] "): empty unless room is set and to is not the room itself.
func inRoom(room, to string) string {
	if room == "" || room == to {
		return ""
	}
	return "[" + s(room) + "] "
}

// emote renders an emote from name (none: empty) as IRC does: "* alice
// waves".
func emote(name, text string) string {
	if name == "" {
		return "* " + s(text)
	}
	return "* " + s(name) + " " + s(text)
}

// sentWhen says when a stored message was sent, in now's time zone: the
// time alone on the day it is shown, else with its date.
func sentWhen(sent, now time.Time) string {
	sent = sent.In(now.Location())
	if sent.Year() == now.Year() && sent.YearDay() == now.YearDay() {
		return sent.Format(timeFormat)
	}
	return sent.Format("Jan 2 " + timeFormat)
}

func renderPeers(peers []api.PeerInfo) string {
	if len(peers) == 0 {
		return "*** nobody else is here"
	}
	width := 0
	for _, p := range peers {
		width = max(width, utf8.RuneCountInString(s(p.Name)))
	}
	var b strings.Builder
	if len(peers) == 1 {
		b.WriteString("*** 1 peer:")
	} else {
		fmt.Fprintf(&b, "*** %d peers:", len(peers))
	}
	for _, p := range peers {
		name := s(p.Name)
		rtt := ""
		if p.Path != api.PathNone && p.RTTMS > 0 {
			rtt = fmt.Sprintf("%.1f ms", p.RTTMS)
		}
		row := fmt.Sprintf("  %s%s  %-6s %10s", name, strings.Repeat(" ", width-utf8.RuneCountInString(name)), s(p.Path), rtt)
		if !p.Online {
			row += "  (not in your rooms)"
		}
		b.WriteString("\n" + strings.TrimRight(row, " "))
	}
	return b.String()
}

func renderPath(e *api.PathChanged) string {
	if e.Path == api.PathNone {
		return fmt.Sprintf("*** path to %s: none", s(e.Peer))
	}
	str := fmt.Sprintf("*** path to %s: %s", s(e.Peer), s(e.Path))
	if e.Remote != "" {
		str += " via " + s(e.Remote)
	}
	if e.RTTMS > 0 {
		str += fmt.Sprintf(" (%.1f ms)", e.RTTMS)
	}
	return str
}

func renderError(e *api.Error) string {
	msg := s(e.Message)
	if msg == "" {
		msg = s(e.Code)
	}
	str := "! " + msg
	if e.To != "" {
		str = fmt.Sprintf("! %sto %s: %s", inRoom(e.Room, e.To), s(e.To), msg)
	}
	if e.Code == api.CodeKeyChanged && (e.Fingerprint != "" || e.NewFingerprint != "") {
		str += fmt.Sprintf("\n  pinned key:  %s\n  offered now: %s", s(e.Fingerprint), s(e.NewFingerprint))
		if e.Peer != "" {
			str += fmt.Sprintf("\n  compare with %s out of band, then /trust %s", s(e.Peer), s(e.Peer))
		}
	}
	return str
}

// renderHelp renders the grammar's commands as ui.HelpText does.
func renderHelp(cmds []api.CommandHelp) string {
	var b strings.Builder
	b.WriteString("commands:")
	for _, h := range cmds {
		fmt.Fprintf(&b, "\n  %-24s %s", s(h.Usage), s(h.Summary))
	}
	b.WriteString("\n  TEXT                     a line without / goes to the current conversation")
	return b.String()
}

// renderRoomJoined: our own join (the answer to /join: Name is self, or
// the counts are set) with the room's counts, anyone else's as IRC shows
// it.
func renderRoomJoined(e *api.RoomJoined, self string) string {
	if e.Total > 0 || (self != "" && e.Name == self) {
		return fmt.Sprintf("*** you joined %s (%s, %d online)", s(e.Room), plural(e.Total, "member"), e.Online)
	}
	return fmt.Sprintf("*** %s has joined %s", s(e.Name), s(e.Room))
}

func renderRoomLeft(e *api.RoomLeft, self string) string {
	has, was := s(e.Name)+" has", s(e.Name)+" was"
	if self != "" && e.Name == self {
		has, was = "you", "you were"
	}
	switch e.Reason {
	case api.RoomReasonPart:
		return fmt.Sprintf("*** %s left %s", has, s(e.Room))
	case api.RoomReasonExpired:
		return fmt.Sprintf("*** %s dropped from %s (away too long)", was, s(e.Room))
	}
	return fmt.Sprintf("*** %s left %s (%s)", has, s(e.Room), s(e.Reason))
}

// renderRooms lists the rooms we are in, their names lined up:
//
//	*** 2 rooms:
//	      #dev    3 members, 2 online
//	      #lobby  1 member, 1 online
func renderRooms(rooms []api.RoomInfo) string {
	if len(rooms) == 0 {
		return "*** you are in no room; /join #ROOM to join one"
	}
	width := 0
	for _, r := range rooms {
		width = max(width, utf8.RuneCountInString(s(r.Room)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*** %s:", plural(len(rooms), "room"))
	for _, r := range rooms {
		name := s(r.Room)
		fmt.Fprintf(&b, "\n  %s%s  %s, %d online", name, strings.Repeat(" ", width-utf8.RuneCountInString(name)), plural(r.Members, "member"), r.Online)
	}
	return b.String()
}

// plural says n things: "1 member", "3 members".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// renderFileProgress draws a transfer's progress as a bar with its rate
// and the time left.
func renderFileProgress(e *api.FileProgress) string {
	const width = 20
	filled := 0
	if e.Total > 0 {
		filled = int(min(max(e.Bytes, 0), e.Total) * width / e.Total)
	}
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	eta := "?"
	if e.ETAS > 0 {
		eta = (time.Duration(e.ETAS) * time.Second).String()
	}
	path := ""
	if e.Path != "" {
		path = ", " + s(e.Path)
	}
	return fmt.Sprintf("  file %s %s %s of %s, %s/s, %s left%s", s(e.ID), bar, sizeText(e.Bytes), sizeText(e.Total), sizeText(e.RateBPS), eta, path)
}

// sizeText writes a byte count for people: 512 B, 1.5 KiB, 50.0 MiB.
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
