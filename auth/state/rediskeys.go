package state

import (
	"net/netip"
	"strings"
)

// The Redis keys, all under one hash tag so that a Redis Cluster keeps
// them in one slot (an attempt's script touches several at once):
//
//	{imapgate}:c:NAME  set of fingerprints (a count), expires Window after its last failure
//	{imapgate}:p:NAME  sorted set of fingerprints in flight, scored by deadline (ms, server time)
//	{imapgate}:o:NET|USER  an owner mark, expires Remember after the last login
//	{imapgate}:blocks  sorted set of the NAMEs of counts at their limit, scored by expiry
//	{imapgate}:key     the fingerprints' HMAC key, made once by whichever imapgate comes first
//	{imapgate}:events  the channel on which blocks and lifts are pushed to every imapgate
//
// where NAME is pair:NET|USER, user:USER or net:NET, NET a network as
// netip.Prefix prints it (or "-" for none) and USER the user as the limits
// count it. The user comes last, so that it may hold any byte.
const (
	redisPrefix  = "{imapgate}:"
	redisBlocks  = redisPrefix + "blocks"
	redisKey     = redisPrefix + "key"
	redisChannel = redisPrefix + "events"
)

// netName is a network as the keys write it.
func netName(p netip.Prefix) string {
	if !p.IsValid() {
		return "-"
	}
	return p.String()
}

// countName is the NAME of a count.
func countName(k countKey) string {
	switch k.kind {
	case Pair:
		return "pair:" + netName(k.network) + "|" + k.user
	case User:
		return "user:" + k.user
	case Network:
		return "net:" + netName(k.network)
	case Owner:
		return "owner:" + netName(k.network) + "|" + k.user
	}
	return ""
}

// redisKeyOf is the key of a record: a count, or an owner mark.
func redisKeyOf(k countKey) string {
	if k.kind == Owner {
		return redisPrefix + "o:" + netName(k.network) + "|" + k.user
	}
	return redisPrefix + "c:" + countName(k)
}

// parseName reads a NAME back; ok is false for anything else.
func parseName(name string) (k countKey, ok bool) {
	kind, rest, found := strings.Cut(name, ":")
	if !found {
		return k, false
	}
	k.kind = map[string]Kind{"pair": Pair, "user": User, "net": Network, "owner": Owner}[kind]
	switch k.kind {
	case Pair, Owner:
		net, user, found := strings.Cut(rest, "|")
		p, err := parseNet(net)
		return countKey{k.kind, recordKey{user, p}}, found && err == nil
	case User:
		return countKey{User, recordKey{rest, netip.Prefix{}}}, true
	case Network:
		p, err := parseNet(rest)
		return countKey{Network, recordKey{"", p}}, err == nil
	}
	return k, false
}

func parseNet(s string) (netip.Prefix, error) {
	if s == "-" {
		return netip.Prefix{}, nil
	}
	return netip.ParsePrefix(s)
}
