// Package ui holds what every natchat front end shares: the one command
// grammar (Parse, with /help generated from the same table), the current
// conversation that plain text goes to (Dispatcher), and Safe, which makes
// a peer's text inert on a terminal. Front ends live in its subpackages:
// headless (JSON lines) and line (a prompt with line editing).
package ui

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"natchat/node/api"
	"natchat/wire"
)

// Line is one parsed line of input: a command for the node, text for the
// current conversation (Say, of kind Kind: plain text, or an emote from
// /me), or a request for help. At most one of Cmd, Say and Help is set;
// all are zero for an empty line. An api.Part without a Room (/part alone)
// parts the current conversation, which the Dispatcher fills in as it
// does for Say.
type Line struct {
	Cmd   api.Command
	Say   string
	Kind  string // of Say: api.KindText or api.KindEmote
	Help  bool
	Clear bool // /clear: the front end clears its view (the node is not asked)
}

// spec is one command of the grammar.
type spec struct {
	name    string
	aliases []string
	usage   string
	summary string
	parse   func(args string) (Line, *api.Error)
}

// commands is the grammar, in the order /help lists it.
var commands = []spec{
	{name: "/msg", usage: "/msg NAME TEXT", summary: "send TEXT to NAME, a peer or a #room; plain lines then go to NAME too", parse: parseMsg},
	{name: "/me", usage: "/me ACTION", summary: "send ACTION to the current conversation as an emote, shown as \"* yourname ACTION\"", parse: parseMe},
	{name: "/join", usage: "/join #ROOM", summary: "join ROOM (creating it if no one is in it); plain lines then go to ROOM", parse: parseJoin},
	{name: "/part", usage: "/part [#ROOM]", summary: "leave ROOM, or the room you are talking in", parse: parsePart},
	{name: "/rooms", usage: "/rooms", summary: "the rooms you are in, with how many members each has and how many are online", parse: noArgs(api.ListRooms{})},
	{name: "/who", usage: "/who [#ROOM [AFTER]]", summary: "who is online, and the path to each; with #ROOM, a page of that room's members (after AFTER)", parse: parseWho},
	{name: "/send", usage: "/send NAME PATH", summary: "offer the file at PATH to NAME (it arrives once NAME accepts)", parse: parseSend},
	{name: "/accept", usage: "/accept ID", summary: "accept the file offer ID (saved in your downloads folder)", parse: parseFileID(func(id string) api.Command { return api.AcceptFile{ID: id} }, "/accept ID")},
	{name: "/reject", usage: "/reject ID", summary: "refuse the file offer ID", parse: parseFileID(func(id string) api.Command { return api.RejectFile{ID: id} }, "/reject ID")},
	{name: "/cancel", usage: "/cancel ID", summary: "stop the file transfer ID, sending or receiving", parse: parseFileID(func(id string) api.Command { return api.CancelFile{ID: id} }, "/cancel ID")},
	{name: "/fingerprint", usage: "/fingerprint [NAME]", summary: "your key's fingerprint, or NAME's, to compare out of band", parse: parseFingerprint},
	{name: "/trust", usage: "/trust NAME", summary: "accept NAME's new key after a key_changed warning", parse: parseTrust},
	{name: "/history", usage: "/history [N] [NAME]", summary: "the last N (default 50) messages of the current conversation, or of NAME (a peer or a #room), from the node's history", parse: parseHistory},
	{name: "/netcheck", usage: "/netcheck", summary: "your public endpoint(s), your NAT's mapping behaviour, and the path to each peer", parse: noArgs(api.CheckNet{})},
	{name: "/clear", usage: "/clear", summary: "clear the conversation on screen (history is kept)", parse: func(args string) (Line, *api.Error) {
		if strings.TrimSpace(args) != "" {
			return Line{}, badCommand("takes no arguments")
		}
		return Line{Clear: true}, nil
	}},
	{name: "/dereg", usage: "/dereg", summary: "go offline without quitting: messages to you wait in your mailbox", parse: noArgs(api.Deregister{})},
	{name: "/reg", usage: "/reg", summary: "come back online (after /dereg) and get what waits in your mailbox", parse: noArgs(api.Register{})},
	{name: "/help", usage: "/help", summary: "this list", parse: func(string) (Line, *api.Error) { return Line{Help: true}, nil }},
	{name: "/quit", aliases: []string{"/q"}, usage: "/quit", summary: "leave", parse: noArgs(api.Quit{})},
}

func noArgs(c api.Command) func(string) (Line, *api.Error) {
	return func(args string) (Line, *api.Error) {
		if strings.TrimSpace(args) != "" {
			return Line{}, badCommand("takes no arguments")
		}
		return Line{Cmd: c}, nil
	}
}

func badCommand(msg string) *api.Error { return &api.Error{Code: api.CodeBadCommand, Message: msg} }

// badRoom returns a bad_name error unless room is a room name
// (wire.ValidateRoom), saying why.
func badRoom(room string) *api.Error {
	if err := wire.ValidateRoom(room); err != nil {
		return &api.Error{Code: api.CodeBadName, Message: err.Error()}
	}
	return nil
}

// parseMsg parses /msg NAME TEXT, where NAME is a peer or a room ("#dev",
// checked by wire.ValidateRoom; a peer's name is checked by the node).
func parseMsg(args string) (Line, *api.Error) {
	to, text, _ := strings.Cut(strings.TrimLeft(args, " "), " ")
	if to == "" || text == "" {
		return Line{}, badCommand("usage: /msg NAME TEXT")
	}
	if wire.IsRoom(to) {
		if err := badRoom(to); err != nil {
			err.To = to
			return Line{}, err
		}
	}
	if err := CheckText(text); err != nil {
		err.To = to
		return Line{}, err
	}
	return Line{Cmd: api.Send{To: to, Text: text}}, nil
}

// parseMe parses /me ACTION: an emote for the current conversation, which
// the Dispatcher fills in as it does for plain text. The action is checked
// as any text is (bad_text when empty or blank).
func parseMe(args string) (Line, *api.Error) {
	text := strings.TrimLeft(args, " ")
	if err := CheckText(text); err != nil {
		return Line{}, err
	}
	return Line{Say: text, Kind: api.KindEmote}, nil
}

// parseJoin parses /join #ROOM.
func parseJoin(args string) (Line, *api.Error) {
	f := strings.Fields(args)
	if len(f) != 1 {
		return Line{}, badCommand("usage: /join #ROOM")
	}
	if err := badRoom(f[0]); err != nil {
		return Line{}, err
	}
	return Line{Cmd: api.Join{Room: f[0]}}, nil
}

// parsePart parses /part [#ROOM]; without ROOM, the Dispatcher parts the
// current conversation if it is a room.
func parsePart(args string) (Line, *api.Error) {
	f := strings.Fields(args)
	switch len(f) {
	case 0:
		return Line{Cmd: api.Part{}}, nil
	case 1:
		if err := badRoom(f[0]); err != nil {
			return Line{}, err
		}
		return Line{Cmd: api.Part{Room: f[0]}}, nil
	}
	return Line{}, badCommand("usage: /part [#ROOM]")
}

// maxRoomLen bounds a room's name (a wire string holds 255 bytes).
const maxRoomLen = 64

func parseWho(args string) (Line, *api.Error) {
	f := strings.Fields(args)
	switch {
	case len(f) == 0:
		return Line{Cmd: api.Who{}}, nil
	case len(f) > 2 || !strings.HasPrefix(f[0], "#") || len(f[0]) < 2 || len(f[0]) > maxRoomLen || !utf8.ValidString(f[0]) ||
		strings.ContainsFunc(f[0], unicode.IsControl):
		return Line{}, badCommand("usage: /who [#ROOM [AFTER]]")
	}
	w := api.Who{Room: f[0]}
	if len(f) == 2 {
		if err := wire.ValidateName(f[1]); err != nil {
			return Line{}, badCommand("AFTER must be a name: " + err.Error())
		}
		w.After = f[1]
	}
	return Line{Cmd: w}, nil
}

// maxHistory bounds /history N.
const maxHistory = 1000

// parseHistory parses /history [N] [NAME|#ROOM]. Without NAME the
// Dispatcher fills in the current conversation.
func parseHistory(args string) (Line, *api.Error) {
	const usage = "usage: /history [N] [NAME|#ROOM] (N from 1 to 1000)"
	h := api.History{}
	f := strings.Fields(args)
	if len(f) > 2 {
		return Line{}, badCommand(usage)
	}
	if len(f) > 0 {
		if n, err := strconv.Atoi(f[0]); err == nil {
			if n < 1 || n > maxHistory {
				return Line{}, badCommand(usage)
			}
			h.N = n
			f = f[1:]
		}
	}
	switch len(f) {
	case 0:
	case 1:
		if wire.IsRoom(f[0]) {
			if err := badRoom(f[0]); err != nil {
				return Line{}, err
			}
		} else if err := wire.ValidateName(f[0]); err != nil {
			return Line{}, &api.Error{Code: api.CodeBadName, Message: err.Error()}
		}
		h.Conv = f[0]
	default:
		return Line{}, badCommand(usage)
	}
	return Line{Cmd: h}, nil
}

// parseSend parses /send NAME PATH; PATH is the rest of the line (it may
// hold spaces).
func parseSend(args string) (Line, *api.Error) {
	to, path, _ := strings.Cut(strings.TrimLeft(args, " "), " ")
	path = strings.TrimSpace(path)
	if to == "" || path == "" {
		return Line{}, badCommand("usage: /send NAME PATH")
	}
	if err := wire.ValidateName(to); err != nil {
		return Line{}, &api.Error{Code: api.CodeBadName, Message: err.Error(), To: to}
	}
	return Line{Cmd: api.SendFile{To: to, Path: path}}, nil
}

// parseFileID parses a command whose one argument is a transfer's ID.
func parseFileID(mk func(string) api.Command, usage string) func(string) (Line, *api.Error) {
	return func(args string) (Line, *api.Error) {
		f := strings.Fields(args)
		if len(f) != 1 {
			return Line{}, badCommand("usage: " + usage)
		}
		if _, err := wire.ParseFileID(f[0]); err != nil {
			return Line{}, badCommand(usage + ": ID is the 16 hex digits of a file_offer's id")
		}
		return Line{Cmd: mk(f[0])}, nil
	}
}

func parseFingerprint(args string) (Line, *api.Error) {
	f := strings.Fields(args)
	if len(f) > 1 {
		return Line{}, badCommand("usage: /fingerprint [NAME]")
	}
	var name string
	if len(f) == 1 {
		name = f[0]
	}
	return Line{Cmd: api.ShowFingerprint{Name: name}}, nil
}

func parseTrust(args string) (Line, *api.Error) {
	f := strings.Fields(args)
	if len(f) != 1 {
		return Line{}, badCommand("usage: /trust NAME")
	}
	return Line{Cmd: api.Trust{Name: f[0]}}, nil
}

// CheckText returns a bad_text error unless text can be sent: 1 to
// wire.MaxTextLen bytes of UTF-8 with something other than white space.
// Every way of sending text checks it the same way.
func CheckText(text string) *api.Error {
	switch {
	case !utf8.ValidString(text) || len(text) > wire.MaxTextLen:
		return &api.Error{Code: api.CodeBadText, Message: fmt.Sprintf("message text must be 1 to %d bytes of UTF-8", wire.MaxTextLen)}
	case strings.TrimFunc(text, unicode.IsSpace) == "":
		return &api.Error{Code: api.CodeBadText, Message: "message text is empty or only white space"}
	}
	return nil
}

// Parse parses one line of input (without or with its line end). An empty
// line is zero Line and no error; a line with only white space is a
// bad_text error, as blank text is wherever it is sent.
func Parse(line string) (Line, *api.Error) {
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return Line{}, nil
	}
	if !strings.HasPrefix(line, "/") {
		if err := CheckText(line); err != nil {
			return Line{}, err
		}
		return Line{Say: line}, nil
	}
	name, args, _ := strings.Cut(line, " ")
	for _, c := range commands {
		if name == c.name || containsStr(c.aliases, name) {
			return c.parse(args)
		}
	}
	return Line{}, badCommand(fmt.Sprintf("unknown command %s (try /help)", Safe(name)))
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Help returns the grammar's commands for /help.
func Help() []api.CommandHelp {
	out := make([]api.CommandHelp, 0, len(commands))
	for _, c := range commands {
		usage := c.usage
		for _, a := range c.aliases {
			usage += " (or " + a + ")"
		}
		out = append(out, api.CommandHelp{Usage: usage, Summary: c.summary})
	}
	return out
}

// HelpText renders Help for people, one command per line.
func HelpText() string {
	var b strings.Builder
	b.WriteString("commands:\n")
	for _, h := range Help() {
		fmt.Fprintf(&b, "  %-24s %s\n", h.Usage, h.Summary)
	}
	b.WriteString("  TEXT                     a line without / goes to the current conversation\n")
	return b.String()
}
