package rendezvous

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

func mailTestID(i int) wire.MsgID {
	var id wire.MsgID
	binary.BigEndian.PutUint64(id[:], uint64(i))
	return id
}

// depositWait deposits m and returns the outcome, waiting for it if it
// is written.
func depositWait(t testing.TB, s *Store, m StoredMail, lim MailLimits) DepositResult {
	t.Helper()
	ch := make(chan DepositResult, 1)
	res, queued := s.Deposit(m, lim, func(r DepositResult) { ch <- r })
	if queued {
		select {
		case res = <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("deposit not answered")
		}
	}
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	return res
}

// ackWait acknowledges refs in to's mailbox and returns the receipts made.
func ackWait(t testing.TB, s *Store, to wire.Key, refs []wire.MailRef) []SenderReceipt {
	t.Helper()
	type result struct {
		made []SenderReceipt
		err  error
	}
	ch := make(chan result, 1)
	if !s.Ack(to, refs, storeT0, func(made []SenderReceipt, err error) { ch <- result{made, err} }) {
		return nil
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.made
}

// checkMail checks that the mailbox buckets agree with each other and
// with the counts kept in memory.
func checkMail(t testing.TB, s *Store) {
	t.Helper()
	d := newMailDelta()
	err := s.db.View(func(tx *bolt.Tx) error {
		mail, ids, ages := tx.Bucket(bucketMail), tx.Bucket(bucketMailID), tx.Bucket(bucketMailAge)
		receipts, rages := tx.Bucket(bucketReceipts), tx.Bucket(bucketReceiptAge)
		n := 0
		mail.ForEach(func(k, v []byte) error {
			n++
			to, seq := wire.Key(k[:wire.KeyLen]), k[wire.KeyLen:]
			from := wire.Key(v[:wire.KeyLen])
			var id wire.MsgID
			copy(id[:], v[wire.KeyLen:])
			if got := ids.Get(idKey(to, from, id)); !bytes.Equal(got, seq) {
				t.Errorf("mailid of %s: %x, want %x", id, got, seq)
			}
			if ages.Get(append(append(bytes.Clone(v[wire.KeyLen+8:mailHeaderLen]), to[:]...), seq...)) == nil {
				t.Errorf("message %s not in mailage", id)
			}
			d.add(to, from, 1, int64(len(v)-mailHeaderLen))
			return nil
		})
		if ids.Stats().KeyN != n || ages.Stats().KeyN != n {
			t.Errorf("%d messages, %d in mailid, %d in mailage", n, ids.Stats().KeyN, ages.Stats().KeyN)
		}
		rn := 0
		receipts.ForEach(func(k, v []byte) error {
			rn++
			if len(v) != 9 || rages.Get(append(bytes.Clone(v[1:]), k...)) == nil {
				t.Errorf("receipt %x not in receiptage", k)
			}
			d.receipts[wire.Key(k[:wire.KeyLen])]++
			return nil
		})
		if rages.Stats().KeyN != rn {
			t.Errorf("%d receipts, %d in receiptage", rn, rages.Stats().KeyN)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := newMailState()
	want.apply(d)
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	if want.count != s.mail.count || want.bytes != s.mail.bytes || len(want.boxes) != len(s.mail.boxes) || len(want.receipts) != len(s.mail.receipts) {
		t.Fatalf("in memory: %d messages, %d bytes, %d boxes, %d receipt senders; on disk %d, %d, %d, %d",
			s.mail.count, s.mail.bytes, len(s.mail.boxes), len(s.mail.receipts), want.count, want.bytes, len(want.boxes), len(want.receipts))
	}
	for to, b := range want.boxes {
		got := s.mail.boxes[to]
		if got == nil || got.count != b.count || got.bytes != b.bytes || len(got.senders) != len(b.senders) {
			t.Fatalf("mailbox %s: in memory %+v, on disk %+v", to.Short(), got, b)
		}
		for from, f := range b.senders {
			if g := got.senders[from]; g == nil || *g != *f {
				t.Fatalf("mailbox %s, sender %s: in memory %+v, on disk %+v", to.Short(), from.Short(), g, f)
			}
		}
	}
	for from, n := range want.receipts {
		if s.mail.receipts[from] != n {
			t.Fatalf("receipts of %s: %d in memory, %d on disk", from.Short(), s.mail.receipts[from], n)
		}
	}
	if len(s.mail.committing) != 0 {
		t.Errorf("%d deposits still committing", len(s.mail.committing))
	}
}

// TestMailStoreReopen: deposits, acknowledgements and receipts are on disk
// after reopening, and the counts are rebuilt.
func TestMailStoreReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, StoreOptions{})
	to, a, b := storeKey(1), storeKey(2), storeKey(3)
	for i := range 6 {
		from := a
		if i%2 == 1 {
			from = b
		}
		res := depositWait(t, s, StoredMail{To: to, From: from, ID: mailTestID(i), Stored: storeT0.Add(time.Duration(i) * time.Second), Blob: []byte(strings.Repeat("x", 10+i))}, MailLimits{})
		if res.Status != wire.MailStored || !res.New {
			t.Fatalf("deposit %d: %+v", i, res)
		}
	}
	made := ackWait(t, s, to, []wire.MailRef{{Peer: a, ID: mailTestID(0)}, {Peer: b, ID: mailTestID(1)}, {Peer: a, ID: mailTestID(99)}})
	if len(made) != 2 || made[0].Sender != a || made[1].Sender != b || made[0].Peer != to || made[0].Status != wire.ReceiptDelivered {
		t.Fatalf("receipts made %+v", made)
	}
	checkMail(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStore(t, dir, StoreOptions{})
	checkMail(t, s)
	if c, n := s.MailStats(to); c != 4 || n != 12+13+14+15 {
		t.Errorf("MailStats %d, %d", c, n)
	}
	if c, n := s.MailTotals(); c != 4 || n != 12+13+14+15 {
		t.Errorf("MailTotals %d, %d", c, n)
	}
	if s.PendingReceipts(a) != 1 || s.PendingReceipts(b) != 1 || s.PendingReceipts(to) != 0 {
		t.Errorf("pending receipts %d, %d, %d", s.PendingReceipts(a), s.PendingReceipts(b), s.PendingReceipts(to))
	}
	got, err := s.Mail(to, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range got {
		if m.ID != mailTestID(i+2) || !m.Stored.Equal(storeT0.Add(time.Duration(i+2)*time.Second)) || len(m.Blob) != 12+i {
			t.Fatalf("message %d: %s stored %v, %d bytes", i, m.ID, m.Stored, len(m.Blob))
		}
	}
	rs, err := s.Receipts(a, 16)
	if err != nil || len(rs) != 1 || rs[0].Peer != to || rs[0].ID != mailTestID(0) {
		t.Fatalf("receipts %+v, %v", rs, err)
	}
	ch := make(chan error, 1)
	if !s.AckReceipts(a, []wire.MailRef{{Peer: to, ID: mailTestID(0)}}, func(err error) { ch <- err }) {
		t.Fatal("receipt acknowledgement not queued")
	}
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	if s.AckReceipts(a, []wire.MailRef{{Peer: to, ID: mailTestID(0)}}, nil) {
		t.Error("acknowledging a receipt gone was queued")
	}
	if s.Ack(to, []wire.MailRef{{Peer: a, ID: mailTestID(0)}}, storeT0, nil) {
		t.Error("acknowledging a message gone was queued")
	}
	checkMail(t, s)
}

// TestMailStoreLimitsInOneCommit: deposits that each fit when queued but
// not together are checked again as the committer writes them.
func TestMailStoreLimitsInOneCommit(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	to, from := storeKey(1), storeKey(2)
	inFirst, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.testHookCommit = func(n int) { once.Do(func() { close(inFirst); <-release }) }
	// A first deposit holds the committer; ten more queue behind it.
	var wg sync.WaitGroup
	results := make([]DepositResult, 11)
	lim := MailLimits{Count: 5, ShareCount: 4}
	for i := range 11 {
		if i == 1 {
			<-inFirst
		}
		wg.Add(1)
		res, queued := s.Deposit(StoredMail{To: to, From: from, ID: mailTestID(i), Stored: storeT0, Blob: []byte("x")}, lim,
			func(r DepositResult) { results[i] = r; wg.Done() })
		if !queued {
			t.Fatalf("deposit %d settled at once: %+v", i, res)
		}
	}
	close(release)
	wg.Wait()
	stored := 0
	for i, r := range results {
		switch {
		case r.Status == wire.MailStored && r.New:
			stored++
		case r.Status != wire.MailShare || i < 4:
			t.Errorf("deposit %d: %+v", i, r)
		}
	}
	if stored != 4 {
		t.Errorf("%d stored, want the share of 4", stored)
	}
	// Now the limits refuse at once, without a write.
	commits := s.commits.Load()
	res, queued := s.Deposit(StoredMail{To: to, From: from, ID: mailTestID(20), Stored: storeT0, Blob: []byte("x")}, lim, nil)
	if queued || res.Status != wire.MailShare {
		t.Errorf("over the share: %+v, queued %v", res, queued)
	}
	// And a duplicate that is durable is stored, at once.
	res, queued = s.Deposit(StoredMail{To: to, From: from, ID: mailTestID(0), Stored: storeT0, Blob: []byte("x")}, lim, nil)
	if queued || res.Status != wire.MailStored || res.New {
		t.Errorf("duplicate: %+v, queued %v", res, queued)
	}
	if s.commits.Load() != commits {
		t.Error("a refusal or a duplicate was written")
	}
	checkMail(t, s)
}

// TestMailStoreDuplicateWhileCommitting: a duplicate of a deposit being
// committed is not answered before that commit is durable.
func TestMailStoreDuplicateWhileCommitting(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	m := StoredMail{To: storeKey(1), From: storeKey(2), ID: mailTestID(1), Stored: storeT0, Blob: []byte("hello")}
	inFirst, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.testHookCommit = func(n int) { once.Do(func() { close(inFirst); <-release }) }
	first := make(chan DepositResult, 1)
	if _, queued := s.Deposit(m, MailLimits{}, func(r DepositResult) { first <- r }); !queued {
		t.Fatal("not queued")
	}
	<-inFirst
	second := make(chan DepositResult, 1)
	if res, queued := s.Deposit(m, MailLimits{}, func(r DepositResult) { second <- r }); !queued {
		t.Fatalf("the duplicate of a deposit being committed was answered at once: %+v", res)
	}
	close(release)
	if r := <-first; r.Status != wire.MailStored || !r.New {
		t.Errorf("first %+v", r)
	}
	if r := <-second; r.Status != wire.MailStored || r.New {
		t.Errorf("second %+v", r)
	}
	checkMail(t, s)
}

// TestMailStoreExpire: messages stored before the cut go, in batches,
// each with an expired receipt; receipts made before the receipt cut go.
func TestMailStoreExpire(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	to := storeKey(1)
	const old = 2*expireBatch + 10
	var wg sync.WaitGroup
	for i := range old + 5 {
		stored := storeT0
		if i >= old {
			stored = storeT0.Add(time.Hour)
		}
		wg.Add(1)
		_, queued := s.Deposit(StoredMail{To: to, From: storeKey(2 + i%3), ID: mailTestID(i), Stored: stored, Blob: []byte("x")},
			MailLimits{}, func(DepositResult) { wg.Done() })
		if !queued {
			t.Fatal("not queued")
		}
	}
	wg.Wait()
	commits := s.commits.Load()
	made, err := s.ExpireMail(storeT0.Add(time.Minute), time.Time{}, storeT0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != old {
		t.Fatalf("%d expired, want %d", len(made), old)
	}
	if n := s.commits.Load() - commits; n != 3 {
		t.Errorf("%d commits for %d messages, want 3", n, old)
	}
	for _, rc := range made {
		if rc.Status != wire.ReceiptExpired || rc.Peer != to {
			t.Fatalf("receipt %+v", rc)
		}
	}
	if c, _ := s.MailStats(to); c != 5 {
		t.Errorf("%d left", c)
	}
	if n := s.PendingReceipts(storeKey(2)) + s.PendingReceipts(storeKey(3)) + s.PendingReceipts(storeKey(4)); n != old {
		t.Errorf("%d receipts pending", n)
	}
	checkMail(t, s)
	// The receipts, made at 2 h, go with a receipt cut after that.
	if made, err = s.ExpireMail(storeT0, storeT0.Add(3*time.Hour), storeT0.Add(3*time.Hour)); err != nil || len(made) != 0 {
		t.Fatalf("%d expired, %v", len(made), err)
	}
	if n := s.PendingReceipts(storeKey(2)); n != 0 {
		t.Errorf("%d receipts left", n)
	}
	checkMail(t, s)
}

// The crash test runs this test binary again as a child (TestMain sees
// mailCrashDirEnv) that deposits and acknowledges messages until the
// parent SIGKILLs it.
const (
	mailCrashDirEnv   = "NATCHAT_RV_MAIL_CRASH_DIR"
	mailCrashFirstEnv = "NATCHAT_RV_MAIL_CRASH_FIRST"
	mailCrashLifetime = 30 * time.Second
)

var mailCrashTo = storeKey(1)

func TestMain(m *testing.M) {
	if dir := os.Getenv(mailCrashDirEnv); dir != "" {
		mailCrashChild(dir)
		return
	}
	os.Exit(m.Run())
}

// mailCrashChild opens the store in dir and, until killed, has four
// goroutines deposit messages for mailCrashTo, printing "S <n>" once each
// deposit is answered stored, and acknowledges every third message
// printed, printing "A <n>" once the acknowledgement is answered.
func mailCrashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := OpenStore(dir)
	if err != nil {
		fail(err)
	}
	first, _ := strconv.Atoi(os.Getenv(mailCrashFirstEnv))
	var out sync.Mutex
	emit := func(kind string, n int) {
		out.Lock()
		os.Stdout.WriteString(kind + " " + strconv.Itoa(n) + "\n") // one write(2)
		out.Unlock()
	}
	var next atomic.Int64
	next.Store(int64(first))
	end := time.Now().Add(mailCrashLifetime)
	for range 4 {
		go func() {
			for time.Now().Before(end) {
				n := int(next.Add(1))
				done := make(chan DepositResult, 1)
				m := StoredMail{To: mailCrashTo, From: storeKey(2 + n%3), ID: mailTestID(n), Stored: time.Now(), Blob: []byte(strconv.Itoa(n))}
				res, queued := s.Deposit(m, MailLimits{}, func(r DepositResult) { done <- r })
				if queued {
					res = <-done
				}
				if res.Err != nil || res.Status != wire.MailStored {
					fail(fmt.Errorf("deposit %d: %+v", n, res))
				}
				emit("S", n)
				if n%3 != 0 {
					continue
				}
				acked := make(chan error, 1)
				if !s.Ack(mailCrashTo, []wire.MailRef{{Peer: m.From, ID: m.ID}}, time.Now(), func(_ []SenderReceipt, err error) { acked <- err }) {
					fail(fmt.Errorf("message %d not there to acknowledge", n))
				}
				if err := <-acked; err != nil {
					fail(err)
				}
				emit("A", n)
			}
		}()
	}
	time.Sleep(mailCrashLifetime)
	fail(errors.New("not killed in time"))
}

// runMailCrashChild runs a child on dir, SIGKILLs it once it has printed
// killAfter lines, and returns the messages it printed stored and
// acknowledged.
func runMailCrashChild(t *testing.T, dir string, first, killAfter int) (stored, acked []int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mailCrashDirEnv+"="+dir, mailCrashFirstEnv+"="+strconv.Itoa(first))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer watchdog.Stop()
	sc := bufio.NewScanner(out)
	killed, lines := false, 0
	for sc.Scan() {
		kind, num, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		switch kind {
		case "S":
			stored = append(stored, n)
		case "A":
			acked = append(acked, n)
		default:
			t.Fatalf("child printed %q", sc.Text())
		}
		if lines++; !killed && lines >= killAfter {
			// Keep reading: what the child printed before it died counts.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v (killed by us: %v)\n%s", err, killed, stderr.String())
	}
	return stored, acked
}

// TestMailCrash SIGKILLs a child depositing and acknowledging messages,
// twice on the same directory, and checks that every deposit it was told
// was stored is in the mailbox unless acknowledged, and every
// acknowledged message is gone, with its receipt.
func TestMailCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	t.Parallel()
	dir := t.TempDir()
	var stored, acked []int
	for i, kill := range []int{300, 500} {
		s, a := runMailCrashChild(t, dir, i<<20, kill)
		t.Logf("child %d: %d stored, %d acknowledged before SIGKILL", i, len(s), len(a))
		stored, acked = append(stored, s...), append(acked, a...)
	}
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkMail(t, s)
	box, err := s.Mail(mailCrashTo, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := make(map[wire.MsgID]bool)
	for _, m := range box {
		in[m.ID] = true
	}
	gone := make(map[int]bool)
	for _, n := range acked {
		gone[n] = true
		if in[mailTestID(n)] {
			t.Errorf("message %d acknowledged but still in the mailbox", n)
		}
		rs, err := s.Receipts(storeKey(2+n%3), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range rs {
			found = found || (r.ID == mailTestID(n) && r.Peer == mailCrashTo && r.Status == wire.ReceiptDelivered)
		}
		if !found {
			t.Errorf("message %d acknowledged without a receipt", n)
		}
	}
	for _, n := range stored {
		if !gone[n] && !in[mailTestID(n)] && n%3 != 0 {
			t.Errorf("message %d answered stored is not in the mailbox", n)
		}
	}
	// A message divisible by 3 printed stored but not acknowledged may
	// have been acknowledged durably just before the kill: then it has a
	// receipt.
	for _, n := range stored {
		if n%3 != 0 || gone[n] || in[mailTestID(n)] {
			continue
		}
		rs, _ := s.Receipts(storeKey(2+n%3), 1<<20)
		found := false
		for _, r := range rs {
			found = found || r.ID == mailTestID(n)
		}
		if !found {
			t.Errorf("message %d answered stored is neither in the mailbox nor receipted", n)
		}
	}
}

// TestMailStoreExpireDamaged: an expiry deletes every old age entry it
// takes, even one that names nothing or a message whose ID index is gone,
// so it is never stuck on them; such a message is deleted and no longer
// counted.
func TestMailStoreExpireDamaged(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	to, from := storeKey(1), storeKey(2)
	for i := range 3 {
		if st := depositWait(t, s, StoredMail{To: to, From: from, ID: mailTestID(i), Stored: storeT0, Blob: []byte("x")}, MailLimits{}); st.Status != wire.MailStored {
			t.Fatalf("deposit %d: %v", i, st)
		}
	}
	// Damage: an age entry of the wrong length, and the ID index of
	// message 1 lost.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		t0 := encodeTime(storeT0)
		if err := tx.Bucket(bucketMailAge).Put(append(t0[:], 1, 2, 3), nil); err != nil {
			return err
		}
		return tx.Bucket(bucketMailID).Delete(idKey(to, from, mailTestID(1)))
	}); err != nil {
		t.Fatal(err)
	}
	made, err := s.ExpireMail(storeT0.Add(time.Minute), time.Time{}, storeT0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != 2 {
		t.Errorf("%d expired with receipts, want 2 (the one without an index goes silently)", len(made))
	}
	if c, _ := s.MailStats(to); c != 0 {
		t.Errorf("%d messages still counted", c)
	}
	var left int
	s.db.View(func(tx *bolt.Tx) error {
		left = tx.Bucket(bucketMailAge).Stats().KeyN + tx.Bucket(bucketMail).Stats().KeyN
		return nil
	})
	if left != 0 {
		t.Errorf("%d age entries and messages left", left)
	}
	if made, err := s.ExpireMail(storeT0.Add(time.Minute), time.Time{}, storeT0.Add(time.Hour)); err != nil || len(made) != 0 {
		t.Errorf("a second expiry: %d, %v", len(made), err)
	}
}
