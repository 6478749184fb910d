package sender

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// RefusedError is why the guard would not connect to an address. Callers can
// find it with errors.As to report the job as refused rather than failed.
type RefusedError struct {
	Addr   netip.Addr // the resolved address, as dialled
	Reason string     // "loopback", "private", "link-local", ...
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("address %s is refused (%s); allow it with JETPOST_ALLOWED_NETWORKS", e.Addr, e.Reason)
}

// guard returns a net.Dialer Control hook. It runs after DNS resolution, on
// the very address the socket is about to connect to, which is the only
// check DNS rebinding (a name resolving to a public address when validated
// and to 127.0.0.1 when dialled) cannot get around.
func guard(allowed []netip.Prefix) func(network, address string, c syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			// Fail closed: an address we cannot read is one we cannot vet.
			return &RefusedError{Reason: fmt.Sprintf("unreadable address %q", address)}
		}
		return checkAddr(ap.Addr(), allowed)
	}
}

// checkAddr returns a *RefusedError when ip may not be dialled.
func checkAddr(ip netip.Addr, allowed []netip.Prefix) error {
	// IPv4-mapped IPv6 (::ffff:127.0.0.1) reaches the IPv4 address, so it is
	// judged, and matched against the allow-list, as that address.
	plain := ip.Unmap().WithZone("")
	for _, p := range allowed {
		if p.Contains(plain) {
			return nil
		}
	}
	if reason := refusedReason(plain); reason != "" {
		return &RefusedError{Addr: ip, Reason: reason}
	}
	return nil
}

// refusedReason names the class of addresses ip belongs to that a job from
// an untrusted file must not reach, or "" when ip is a public address. It
// follows the IANA special-purpose address registries: whatever is not
// globally reachable is refused, and addresses that wrap an IPv4 address
// (NAT64, 6to4) are judged by the address they wrap.
func refusedReason(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "invalid address"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	case ip.IsLinkLocalUnicast():
		return "link-local" // includes the cloud metadata service 169.254.169.254
	}
	if ip.Is4() {
		return reason4(ip.As4())
	}
	return reason6(ip.As16())
}

// reason4 covers the IPv4 special-purpose ranges netip has no method for.
func reason4(b [4]byte) string {
	switch {
	case b[0] == 0:
		return "this network, 0.0.0.0/8" // Linux connects 0.x to the local host
	case b[0] == 100 && b[1]&0xc0 == 64:
		return "shared address space, 100.64.0.0/10 (CGNAT)"
	case b[0] == 192 && b[1] == 0 && b[2] == 0:
		return "IETF protocol assignments, 192.0.0.0/24"
	case b[0] == 192 && b[1] == 0 && b[2] == 2,
		b[0] == 198 && b[1] == 51 && b[2] == 100,
		b[0] == 203 && b[1] == 0 && b[2] == 113:
		return "documentation (TEST-NET)"
	case b[0] == 192 && b[1] == 88 && b[2] == 99:
		return "6to4 relay anycast, 192.88.99.0/24 (deprecated)"
	case b[0] == 198 && b[1]&0xfe == 18:
		return "benchmarking, 198.18.0.0/15"
	case b == [4]byte{255, 255, 255, 255}:
		return "broadcast"
	case b[0] >= 240:
		return "reserved, 240.0.0.0/4"
	}
	return ""
}

// reason6 covers the IPv6 ranges netip has no method for. Only global
// unicast (2000::/3) is reachable at all; within it, the IETF blocks that
// are not globally reachable are refused, and 6to4 is judged by the IPv4
// address it wraps.
func reason6(b [16]byte) string {
	// NAT64 (64:ff9b::/96) translates to the embedded IPv4 address on our
	// own network, so 64:ff9b::a00:1 is as internal as 10.0.0.1.
	if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && allZero(b[4:12]) {
		return wrapped(netip.AddrFrom4([4]byte(b[12:])), "NAT64")
	}
	if b[0]&0xe0 != 0x20 {
		return reserved6(b)
	}
	switch {
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
		return "Teredo, 2001::/32"
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0x02 && b[4] == 0 && b[5] == 0:
		return "benchmarking, 2001:2::/48"
	case b[0] == 0x20 && b[1] == 0x01 && b[2]&0xfe == 0:
		return "IETF protocol assignments, 2001::/23"
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8,
		b[0] == 0x3f && b[1] == 0xff && b[2]&0xf0 == 0:
		return "documentation, 2001:db8::/32 and 3fff::/20"
	case b[0] == 0x20 && b[1] == 0x02:
		return wrapped(netip.AddrFrom4([4]byte(b[2:6])), "6to4")
	}
	return ""
}

// reserved6 names why an address outside 2000::/3 (and not loopback,
// private, link-local, multicast or unspecified) is refused.
func reserved6(b [16]byte) string {
	switch {
	case allZero(b[:12]):
		return "IPv4-compatible IPv6, ::/96 (deprecated)"
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1:
		return "local-use NAT64, 64:ff9b:1::/48"
	case b[0] == 0xfe && b[1]&0xc0 == 0xc0:
		return "site-local, fec0::/10 (deprecated)"
	case b[0] == 0x01 && allZero(b[1:8]):
		return "discard-only, 100::/64"
	case b[0] == 0x5f && b[1] == 0x00:
		return "segment routing (SRv6) SIDs, 5f00::/16"
	}
	return "reserved, outside global unicast 2000::/3"
}

// wrapped judges an IPv6 address by the IPv4 address v4 it wraps, through
// the translation or tunnel named by via.
func wrapped(v4 netip.Addr, via string) string {
	if r := refusedReason(v4); r != "" {
		return r + " via " + via
	}
	return ""
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ParseNetworks reads a comma-separated list of CIDRs ("10.0.0.0/8,
// fd00::/8"); a bare IP stands for itself (/32 or /128). Empty entries are
// skipped, so "" is the empty list.
func ParseNetworks(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(tok, "/") {
			var err error
			if p, err = netip.ParsePrefix(tok); err != nil {
				return nil, fmt.Errorf("network %q is not a CIDR like 10.0.0.0/8 or an IP address: %w", tok, err)
			}
		} else {
			ip, err := netip.ParseAddr(tok)
			if err != nil {
				return nil, fmt.Errorf("network %q is not a CIDR like 10.0.0.0/8 or an IP address: %w", tok, err)
			}
			if ip.Zone() != "" {
				return nil, fmt.Errorf("network %q: zoned addresses are not supported", tok)
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		out = append(out, unmapPrefix(p.Masked()))
	}
	return out, nil
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96), the form
// checkAddr matches against after unmapping addresses.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p
}
