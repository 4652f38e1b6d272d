package io.flannelnp.etcd;

import java.util.List;

/**
 * Events delivered together, all at or below {@code revision}. {@code resync} is true when the
 * batch is the difference computed by a re-list (the initial list, or recovery after the watched
 * revision was compacted) rather than etcd's own history.
 */
public record WatchBatch(long revision, List<WatchEvent> events, boolean resync) {}
