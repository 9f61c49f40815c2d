package ui

import (
	"fmt"
	"strings"

	"natchat/node/api"
)

// MembersText renders a /who #ROOM page for people, the same in every
// front end: "#dev: 3 online: ann bob cho … (/who #dev cho for more)".
// Names and the room are made inert (Safe).
func MembersText(e *api.Members) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d online", Safe(e.Room), e.Total)
	if len(e.Members) > 0 {
		b.WriteString(":")
	}
	for _, m := range e.Members {
		b.WriteString(" " + Safe(m.Name))
	}
	if e.Next != "" {
		fmt.Fprintf(&b, " … (/who %s %s for more)", Safe(e.Room), Safe(e.Next))
	}
	return b.String()
}
