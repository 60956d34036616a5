"""The Community ID of a record's fields by the ``communityid`` package, the reference implementation in Python,
for the tests that check ``outputs.community`` against it."""


def reference_id(proto: int, src: str, sport: int, dst: str, dport: int, icmp: tuple | None, seed: int = 0) -> str:
    """The communityid package's Community ID of a record's fields (``icmp``: the first packet's type, code)."""
    import communityid

    cid = communityid.CommunityID(seed)
    if proto == 1 and icmp is not None:
        return cid.calc(communityid.FlowTuple.make_icmp(src, dst, *icmp))
    if proto == 58 and icmp is not None:
        return cid.calc(communityid.FlowTuple.make_icmp6(src, dst, *icmp))
    if proto in (6, 17, 132):
        return cid.calc(communityid.FlowTuple(proto, src, dst, sport, dport))
    return cid.calc(communityid.FlowTuple(proto, src, dst))
