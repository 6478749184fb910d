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
// an untrusted file must not reach, or "" when ip is a public address.
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
		b := ip.As4()
		switch {
		case b[0] == 0:
			return "this network, 0.0.0.0/8" // Linux connects 0.x to the local host
		case b[0] == 100 && b[1]&0xc0 == 64:
			return "shared address space, 100.64.0.0/10 (CGNAT)"
		case b == [4]byte{255, 255, 255, 255}:
			return "broadcast"
		}
		return ""
	}
	// NAT64 (64:ff9b::/96) translates to the embedded IPv4 address on our
	// own network, so 64:ff9b::a00:1 is as internal as 10.0.0.1.
	if b := ip.As16(); b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && allZero(b[4:12]) {
		if r := refusedReason(netip.AddrFrom4([4]byte(b[12:]))); r != "" {
			return r + " via NAT64"
		}
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
