package io.flannelnp.etcd;

import java.util.List;

/** The keys under a prefix as of {@code revision}; a watch from {@code revision + 1} misses nothing. */
public record Listing(long revision, List<KeyValue> kvs) {}
