// Package wire is the milter connection as go-milter v0.5.0's session loop
// sees it. go-milter reads and writes a net.Conn; a Conn is one, wrapped
// around the MTA's socket, that adds what go-milter lacks without changing
// go-milter: a deadline per packet and an overall one (Options), a read
// buffer and writes held until the next read (Options.IOBuffer), the
// protocol-6 negotiation that lets the MTA skip waiting for the replies of
// NoReplyStages (Options.SkipReplies), a client address in the connect
// packet that go-milter can read (ParseClientAddr), a context that ends
// with the connection and a watch for the MTA hanging up during a check.
//
// It relies on exactly these behaviours of go-milter v0.5.0, each pinned
// by the test named (gomilter_test.go), which fails if an upgrade changes
// it; docs/wire.md says the same for readers of the whole project.
//
//  1. It answers SMFIC_OPTNEG with version 2 and exactly its Server's
//     Actions and Protocol, whatever the MTA offers: the reply filter
//     rewrites that 17-byte answer to version 6 and adds the SMFIP_NR_*
//     bits (TestGoMilterNegotiatesVersion2).
//  2. It reads a packet in two reads, its 4-byte length and then its
//     body, and never reads past the packet it is about to handle, so the
//     packets the frame sees complete are the commands go-milter handles
//     next, in order (TestGoMilterOnePacketAtATime).
//  3. It reads nothing while a callback runs, so Watch may read the socket
//     then (TestGoMilterOnePacketAtATime).
//  4. It answers every command except SMFIC_MACRO, SMFIC_ABORT and
//     SMFIC_QUIT with exactly one packet, after the changes the callback
//     made and before it reads again: the reply to a command is the next
//     packet written (the reply filter drops it), and held writes can wait
//     for the next Read (TestGoMilterOnePacketAtATime).
//  5. It writes each packet in one write, so that with no IOBuffer there
//     is one write per packet (TestGoMilterOnePacketAtATime).
//  6. It sets no deadline of its own, so the ones Conn sets stand
//     (TestGoMilterOnePacketAtATime).
//  7. It closes the connection when its loop ends, which is how the daemon
//     learns that a session is over (TestGoMilterOnePacketAtATime).
//  8. It ends a session quietly on io.EOF from Read and logs any other
//     read error itself: Conn logs its timeouts and reports them as
//     io.EOF (TestGoMilterReadErrors).
//  9. Server.Serve starts each session on a goroutine of its own, returns
//     the listener's error as soon as Accept fails, and closes the
//     listener: the daemon serves each connection through a listener of
//     one connection (TestGoMilterServerClose, and every test through
//     serveOne).
//  10. Server.Close closes only the listeners given to Serve, never an
//     open session: the daemon tracks and drains sessions itself
//     (TestGoMilterServerClose).
//  11. It calls the Server's NewMilter when the connection is accepted and
//     again after every reply that ends a message (accept, reject,
//     tempfail, discard), but not after continue or a custom reply; the
//     copy of the Server the daemon serves a connection with is the one
//     called, so that every Milter made is bound to the connection
//     (TestGoMilterNewMilterPerFinalReply).
//  12. Each SMFIC_MACRO packet replaces the macros a callback sees, and an
//     abort drops them (TestGoMilterMacros).
//  13. It adds every header field to a map that only an abort resets, and
//     hands that map to Header as Modifier.Headers: the session empties it
//     at each field to bound its memory (TestGoMilterHeaderMap).
//  14. The index of ChangeHeader and InsertHeader goes to the MTA as given,
//     an empty value deletes, and CRLF is sent as LF
//     (TestGoMilterHeaderChanges).
//  15. MailFrom and RcptTo get the address without its angle brackets and
//     without ESMTP arguments, the null sender as ""
//     (TestGoMilterEnvelope).
//  16. Connect gets net.ParseIP of the address up to its first NUL, nil for
//     "[192.0.2.1]", "IPv6:..." or a zone, which is why Conn rewrites the
//     connect packet; a connect packet of family '4' or '6' without a port
//     is answered with go-milter's own tempfail (TestGoMilterConnectAddress).
package wire
