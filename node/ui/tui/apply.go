package tui

import (
	"fmt"
	"strings"

	"natchat/node/api"
	"natchat/node/ui"
	"natchat/wire"
)

// Rendezvous states, in the status line.
const (
	rvConnecting   = "connecting"
	rvConnected    = "connected"
	rvReconnecting = "reconnecting"
	rvOffline      = "offline"
)

// apply applies one event from the node to the model.
func (m *model) apply(ev api.Event) {
	switch e := ev.(type) {
	case *api.Registered:
		m.rv, m.public = rvConnected, e.Public
		text := "online as " + s(e.Name)
		if e.Public != "" {
			text += "; the rendezvous sees you at " + s(e.Public)
		}
		m.sys(m.status(), ev, text)
		// What the panes show: our rooms, who is online, the room on
		// screen. Answers to these are not printed.
		m.silentRooms++
		m.send(api.ListRooms{})
		m.refreshPeers()
		m.refreshRoom()
	case *api.Deregistered:
		m.rv = rvOffline
		m.sysHere(ev, "offline (messages to you wait in your mailbox); /reg to come back")
		for _, p := range m.peers {
			p.online, p.path = false, api.PathNone
		}
	case *api.Mailbox:
		if e.Count == 1 {
			m.sys(m.status(), ev, "1 message waited for you in your mailbox")
		} else {
			m.sys(m.status(), ev, fmt.Sprintf("%d messages waited for you in your mailbox", e.Count))
		}
	case *api.PeerJoined:
		p := m.peer(e.Name)
		p.online = true
		m.roomsStale = true
		m.sys(m.status(), ev, s(e.Name)+" is online")
		if c := m.find(e.Name); c != nil {
			m.sys(c, ev, s(e.Name)+" is online")
		}
	case *api.PeerLeft:
		p := m.peer(e.Name)
		p.online, p.path, p.remote, p.rttMS = false, api.PathNone, "", 0
		for _, c := range m.convs {
			if c.isRoom() {
				delete(c.members, wire.NameKey(e.Name))
			}
		}
		var text string
		switch e.Reason {
		case api.ReasonQuit:
			text = s(e.Name) + " left"
		case api.ReasonTimeout:
			text = s(e.Name) + " went silent and is offline"
		case api.ReasonPart:
			text = s(e.Name) + " is out of sight (no room in common now)"
		default:
			text = s(e.Name) + " left (" + s(e.Reason) + ")"
		}
		m.sys(m.status(), ev, text)
		if c := m.find(e.Name); c != nil {
			m.sys(c, ev, text)
		}
	case *api.PathChanged:
		p := m.peer(e.Peer)
		p.path, p.remote, p.rttMS = e.Path, e.Remote, e.RTTMS
	case *api.Peers:
		for _, p := range m.peers {
			p.online = false
		}
		for _, r := range e.Peers {
			p := m.peer(r.Name)
			p.online, p.path, p.rttMS = r.Online, r.Path, r.RTTMS
		}
		if m.silentPeers > 0 {
			m.silentPeers--
			return
		}
		m.text(m.current(), ev, peersText(e.Peers, m.self), 4)
	case *api.Members:
		if c := m.find(e.Room); c != nil && c.isRoom() {
			if m.silentMembers[wire.NameKey(e.Room)] > 0 {
				clear(c.members) // our refresh: the page is who is online now
			}
			for _, mem := range e.Members {
				c.members[wire.NameKey(mem.Name)] = mem.Name
			}
			c.total, c.partial = e.Total, e.Next != ""
		}
		if k := wire.NameKey(e.Room); m.silentMembers[k] > 0 {
			m.silentMembers[k]--
			return
		}
		m.sysHere(ev, ui.MembersText(e))
	case *api.RoomJoined:
		c := m.open(e.Room)
		if e.Total > 0 || wire.NameKey(e.Name) == wire.NameKey(m.self) {
			c.parted = false
			c.members[wire.NameKey(m.self)] = m.self
			m.sys(c, ev, fmt.Sprintf("you joined %s (%s, %d online)", s(e.Room), plural(e.Total, "member"), e.Online))
			m.refreshRoom()
			return
		}
		c.members[wire.NameKey(e.Name)] = e.Name
		m.peer(e.Name).online = true
		m.sys(c, ev, s(e.Name)+" has joined the chat")
	case *api.RoomLeft:
		c := m.open(e.Room)
		if wire.NameKey(e.Name) == wire.NameKey(m.self) {
			c.parted = true
			clear(c.members)
			text := "you left " + s(e.Room)
			if e.Reason == api.RoomReasonExpired {
				text = "you were dropped from " + s(e.Room) + " (away too long)"
			}
			m.sys(c, ev, text)
			if m.current() != c {
				m.sysHere(ev, text)
			}
			return
		}
		delete(c.members, wire.NameKey(e.Name))
		switch e.Reason {
		case api.RoomReasonPart:
			m.sys(c, ev, s(e.Name)+" has left the chat")
		case api.RoomReasonExpired:
			m.sys(c, ev, s(e.Name)+" was dropped (away too long)")
		default:
			m.sys(c, ev, s(e.Name)+" has left the chat ("+s(e.Reason)+")")
		}
	case *api.Rooms:
		for _, r := range e.Rooms {
			if wire.ValidateRoom(r.Room) == nil {
				m.open(r.Room).parted = false
			}
		}
		if m.silentRooms > 0 {
			m.silentRooms--
			return
		}
		m.text(m.current(), ev, roomsText(e.Rooms), 4)
	case *api.Sent:
		c := m.open(convOf(e.Room, e.To))
		if old := c.byID[e.ID]; old != nil && old.out {
			old.state, old.resumed = api.StateSending, e.Resumed
			return
		}
		m.add(c, &entry{kind: entryMsg, ts: e.TS, id: e.ID, from: m.self, text: e.Text, emote: e.Kind == api.KindEmote,
			out: true, state: api.StateSending, resumed: e.Resumed})
	case *api.Delivered:
		if x := m.ours(e.Room, e.To, e.ID); x != nil {
			x.state, x.members = api.StateDelivered, e.Members
		}
	case *api.Stored:
		if x := m.ours(e.Room, e.To, e.ID); x != nil {
			if e.Room != "" && wire.NameKey(e.To) != wire.NameKey(e.Room) {
				x.stored++
			} else if x.state != api.StateDelivered {
				x.state = api.StateStored
			}
		}
	case *api.Expired:
		x := m.ours(e.Room, e.To, e.ID)
		switch {
		case x == nil:
			m.errLine(m.convOrHere(convOf(e.Room, e.To)), ev, "to "+s(e.To)+": a stored message expired unread")
		case e.Room != "" && wire.NameKey(e.To) != wire.NameKey(e.Room):
			x.stored = max(0, x.stored-1)
			x.failed++
			m.errLine(m.open(e.Room), ev, "to "+s(e.To)+": a stored message expired unread")
		default:
			x.state, x.reason = api.StateFailed, "expired unread in the mailbox"
		}
	case *api.Message:
		m.message(e)
	case *api.Error:
		m.error(e)
	case *api.Fingerprint:
		switch {
		case e.Self:
			m.sysHere(ev, "your fingerprint: "+s(e.Fingerprint))
		case e.Pinned:
			m.sysHere(ev, fmt.Sprintf("%s's fingerprint: %s (pinned)", s(e.Name), s(e.Fingerprint)))
		default:
			m.sysHere(ev, fmt.Sprintf("%s's fingerprint: %s (offered by the rendezvous; not pinned yet)", s(e.Name), s(e.Fingerprint)))
		}
	case *api.Trusted:
		m.sysHere(ev, fmt.Sprintf("%s is trusted with the key of fingerprint %s", s(e.Name), s(e.Fingerprint)))
	case *api.EventsDropped:
		m.sys(m.status(), ev, fmt.Sprintf("%d presence and path updates skipped while the screen was behind", e.Count))
		m.refreshPeers()
	case *api.Help:
		var b strings.Builder
		b.WriteString("commands:")
		for _, h := range e.Commands {
			fmt.Fprintf(&b, "\n  %-24s %s", s(h.Usage), s(h.Summary))
		}
		m.text(m.current(), ev, b.String(), 27)
	case *api.HistoryEvent:
		m.history(e)
	case *api.NetCheck:
		m.netCheck(e)
	case *api.FileOffer:
		m.fileOffer(e)
	case *api.FileProgress:
		x := m.xfer(e.ID)
		if x.state == xferOffered || x.state == xferAccepting || x.state == xferMoving {
			x.state, x.progress = xferMoving, *e
			m.dropOffer(strings.ToLower(e.ID))
		}
	case *api.FileDone:
		x := m.xfer(e.ID)
		x.state, x.path = xferDone, e.Path
		m.dropOffer(strings.ToLower(e.ID))
	case *api.FileFailed:
		x := m.xfer(e.ID)
		x.state, x.reason = xferFailed, e.Reason
		m.dropOffer(strings.ToLower(e.ID))
	}
}

// convOf is the conversation of a message: its room, else the peer.
func convOf(room, to string) string {
	if room != "" {
		return room
	}
	return to
}

// ours returns our message id in the conversation of room or to.
func (m *model) ours(room, to, id string) *entry {
	if c := m.find(convOf(room, to)); c != nil {
		if e := c.byID[id]; e != nil && e.out {
			return e
		}
	}
	return nil
}

// message shows a message from a peer.
func (m *model) message(e *api.Message) {
	name := convOf(e.Room, e.From)
	c := m.open(name)
	if old := c.byID[e.ID]; old != nil && e.ID != "" {
		return // shown already (from the history)
	}
	ts := e.TS
	if e.Via == api.ViaMailbox && !e.SentTS.IsZero() {
		ts = e.SentTS
	}
	m.add(c, &entry{kind: entryMsg, ts: ts, id: e.ID, from: e.From, text: e.Text, emote: e.Kind == api.KindEmote, via: e.Via})
	// The first conversation that comes to us is put on screen, when
	// nothing else is there and nothing is being typed (as the line UI
	// makes the first writer the conversation).
	if m.cur == 0 && !m.userMoved && m.d.Target() == "" && m.input.Value() == "" {
		m.switchTo(m.index(c))
	}
}

// error shows an error where it belongs: on the message it is about, in
// the conversation it concerns, or where the user is.
func (m *model) error(e *api.Error) {
	msg := s(e.Message)
	if msg == "" {
		msg = s(e.Code)
	}
	if room, ok := whoRoomFailed(e); ok {
		if k := wire.NameKey(room); m.silentMembers[k] > 0 {
			m.silentMembers[k]-- // our own query of the room's members
			return
		}
	}
	if strings.HasPrefix(e.Message, "/rooms: ") && m.silentRooms > 0 {
		m.silentRooms--
		return
	}
	switch {
	case e.ID != "":
		x := m.ours(e.Room, e.To, e.ID)
		roomCopy := e.Room != "" && wire.NameKey(e.To) != wire.NameKey(e.Room)
		switch {
		case x == nil:
			m.errLine(m.convOrHere(convOf(e.Room, e.To)), e, "to "+s(e.To)+": "+msg)
		case roomCopy:
			x.failed++
			m.errLine(m.open(e.Room), e, "to "+s(e.To)+": "+msg)
		default:
			x.state, x.reason = api.StateFailed, msg
		}
	case e.Code == api.CodeKeyChanged && e.Peer != "":
		c := m.open(e.Peer)
		m.errLine(c, e, msg)
		text := fmt.Sprintf("pinned key:  %s\noffered now: %s\ncompare with %s out of band, then /trust %s",
			s(e.Fingerprint), s(e.NewFingerprint), s(e.Peer), s(e.Peer))
		m.text(c, e, text, 2)
		if m.current() != c {
			m.errLine(m.current(), e, msg+" (see "+s(e.Peer)+")")
		}
	case e.To != "":
		m.errLine(m.convOrHere(e.To), e, "to "+s(e.To)+": "+msg)
	case e.Room != "":
		m.errLine(m.convOrHere(e.Room), e, msg)
	case e.Code == api.CodeRendezvousUnreachable && e.Peer == "" && !strings.HasPrefix(e.Message, "/"):
		if m.rv != rvOffline {
			m.rv = rvReconnecting
		}
		m.errLine(m.status(), e, msg)
	default:
		m.errLine(m.current(), e, msg)
	}
}

// whoRoomFailed reports whether e is a failed answer to /who #ROOM, and
// the room.
func whoRoomFailed(e *api.Error) (string, bool) {
	if e.Room != "" || e.To != "" || e.ID != "" {
		return "", false
	}
	switch {
	case e.Code == api.CodeNotMember && strings.HasPrefix(e.Message, "you are not in "):
		return strings.TrimPrefix(e.Message, "you are not in "), true
	case strings.HasPrefix(e.Message, "/who "):
		room, _, ok := strings.Cut(strings.TrimPrefix(e.Message, "/who "), ":")
		return room, ok
	}
	return "", false
}

// history shows the node's history of a conversation.
func (m *model) history(e *api.HistoryEvent) {
	if e.Conv == "" {
		return // no history store yet
	}
	c := m.open(e.Conv)
	hist := make([]*entry, 0, len(e.Entries))
	for _, h := range e.Entries {
		if h.Kind != api.KindText && h.Kind != api.KindEmote {
			continue // a kind this client does not know is never shown
		}
		hist = append(hist, historyEntry(h))
	}
	c.setHistory(hist)
	asked := m.userHistory > 0
	if asked {
		m.userHistory--
		if len(hist) == 0 {
			m.sys(c, e, "no history of "+s(e.Conv))
		}
	}
	if asked || !m.userMoved {
		m.switchTo(m.index(c))
	}
}

// netCheck shows the answer to /netcheck.
func (m *model) netCheck(e *api.NetCheck) {
	c := m.current()
	m.sys(c, e, "netcheck")
	var b strings.Builder
	public := "none known"
	if len(e.Public) > 0 {
		parts := make([]string, len(e.Public))
		for i, p := range e.Public {
			parts[i] = s(p)
		}
		public = strings.Join(parts, ", ")
	}
	fmt.Fprintf(&b, "public   %s\n", public)
	mapping := s(e.Mapping)
	switch e.Mapping {
	case api.MappingIndependent:
		mapping += " (the same endpoint toward every peer: punching works)"
	case api.MappingDependent:
		mapping += " (a new endpoint per destination: peers mostly relayed)"
	}
	if e.Detail != "" {
		mapping += " — " + s(e.Detail)
	}
	fmt.Fprintf(&b, "mapping  %s", mapping)
	if len(e.Peers) == 0 {
		b.WriteString("\npeers    none")
	}
	nameW := 0
	for _, p := range e.Peers {
		nameW = max(nameW, width(s(p.Name)))
	}
	for i, p := range e.Peers {
		label := "         "
		if i == 0 {
			label = "peers    "
		}
		row := label + fit(s(p.Name), nameW) + "  " + fit(s(p.Path), 6)
		if p.RTTMS > 0 {
			row += fmt.Sprintf("  %6.1f ms", p.RTTMS)
		} else {
			row += "           "
		}
		if !p.Changed.IsZero() {
			row += "  changed " + m.when(p.Changed)
		}
		b.WriteString("\n" + strings.TrimRight(row, " "))
		if p.Remote != "" {
			b.WriteString("\n" + strings.Repeat(" ", 9+nameW+2) + "via " + s(p.Remote))
		}
	}
	m.text(c, e, b.String(), 9)
}

// fileOffer shows a file offered to us, or our offer.
func (m *model) fileOffer(e *api.FileOffer) {
	id := strings.ToLower(e.ID)
	incoming := e.From != ""
	p := e.From
	if !incoming {
		p = e.To
	}
	if old := m.xfers[id]; old != nil {
		// Offered again (a restart resumed it): the same entry.
		old.xfer.state = xferOffered
		if incoming && !containsID(m.offers, id) {
			m.offers = append(m.offers, id)
		}
		return
	}
	x := &transfer{id: id, incoming: incoming, peer: p, name: e.Name, size: e.Size, sha256: e.SHA256}
	en := &entry{kind: entryFile, ts: e.TS, xfer: x}
	m.xfers[id] = en
	if incoming {
		m.offers = append(m.offers, id)
	}
	m.add(m.open(p), en)
}

// xfer returns the transfer id, making one (shown in the status view)
// for a transfer this client never saw offered.
func (m *model) xfer(id string) *transfer {
	id = strings.ToLower(id)
	if en := m.xfers[id]; en != nil {
		return en.xfer
	}
	en := &entry{kind: entryFile, ts: m.now(), xfer: &transfer{id: id, name: "file " + id, state: xferAccepting}}
	m.xfers[id] = en
	m.add(m.status(), en)
	return en.xfer
}

func containsID(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// dropOffer takes id off the offers waiting for an answer.
func (m *model) dropOffer(id string) {
	for i, x := range m.offers {
		if x == id {
			m.offers = append(m.offers[:i], m.offers[i+1:]...)
			return
		}
	}
}

// peersText lists peers as /who answers.
func peersText(peers []api.PeerInfo, self string) string {
	if len(peers) == 0 {
		return "*** nobody else is here"
	}
	nameW := 0
	for _, p := range peers {
		nameW = max(nameW, width(s(p.Name)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*** %s:", plural(len(peers), "peer"))
	for _, p := range peers {
		rtt := ""
		if p.Path != api.PathNone && p.RTTMS > 0 {
			rtt = fmt.Sprintf("%.1f ms", p.RTTMS)
		}
		row := fmt.Sprintf("  %s  %-6s %10s", fit(s(p.Name), nameW), s(p.Path), rtt)
		if !p.Online {
			row += "  (not in your rooms)"
		}
		b.WriteString("\n" + strings.TrimRight(row, " "))
	}
	return b.String()
}

func roomsText(rooms []api.RoomInfo) string {
	if len(rooms) == 0 {
		return "*** you are in no room; /join #ROOM to join one"
	}
	nameW := 0
	for _, r := range rooms {
		nameW = max(nameW, width(s(r.Room)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*** %s:", plural(len(rooms), "room"))
	for _, r := range rooms {
		fmt.Fprintf(&b, "\n  %s  %s, %d online", fit(s(r.Room), nameW), plural(r.Members, "member"), r.Online)
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
