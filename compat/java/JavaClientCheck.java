// The official Java client (kafka-clients 4.3.0) against a running Sluice broker.
//
// Usage: java JavaClientCheck BOOTSTRAP SCENARIO
// Run by compat/tests/java.rs, which starts the broker. Exits 1 with a message on the first
// failed check.

import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaClientCheck {
    static final Duration TIMEOUT = Duration.ofSeconds(30);
    static String bootstrap;

    static void check(boolean ok, String message) {
        if (!ok) {
            System.err.println("FAILED: " + message);
            System.exit(1);
        }
    }

    static Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return Admin.create(p);
    }

    static void createTopic(String name, int partitions, Map<String, String> configs) throws Exception {
        try (Admin admin = admin()) {
            admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs))).all().get();
        }
    }

    static KafkaProducer<byte[], byte[]> producer(Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.CHECK_CRCS_CONFIG, true);
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    record Msg(byte[] key, byte[] value, List<Header> headers, long timestamp) {
        boolean sameAs(ConsumerRecord<byte[], byte[]> r) {
            List<Header> got = new ArrayList<>();
            r.headers().forEach(got::add);
            if (got.size() != headers.size()) return false;
            for (int i = 0; i < got.size(); i++) {
                if (!got.get(i).key().equals(headers.get(i).key())) return false;
                if (!Arrays.equals(got.get(i).value(), headers.get(i).value())) return false;
            }
            return Arrays.equals(key, r.key()) && Arrays.equals(value, r.value()) && timestamp == r.timestamp();
        }
    }

    static Msg messageFor(int i) {
        byte[] key = i % 5 == 0 ? null : ("key-" + (i % 17)).getBytes(StandardCharsets.UTF_8);
        byte[] value = null;
        if (i % 11 != 0) {
            byte[] prefix = ("value-" + i + "-").getBytes(StandardCharsets.UTF_8);
            value = Arrays.copyOf(prefix, prefix.length + (i * 7) % 300);
            for (int j = prefix.length; j < value.length; j++) value[j] = (byte) ((j - prefix.length) % 251);
        }
        List<Header> headers = new ArrayList<>();
        for (int h = 0; h < i % 3; h++) {
            headers.add(new RecordHeader("h" + h, h == 1 ? null : ("v" + i + "." + h).getBytes(StandardCharsets.UTF_8)));
        }
        return new Msg(key, value, headers, 1_700_000_000_000L + i);
    }

    static void send(KafkaProducer<byte[], byte[]> producer, String topic, Integer partition, List<Msg> messages) throws Exception {
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        for (Msg m : messages) {
            futures.add(producer.send(new ProducerRecord<>(topic, partition, m.timestamp(), m.key(), m.value(), m.headers())));
        }
        producer.flush();
        for (Future<RecordMetadata> f : futures) f.get();
    }

    static List<ConsumerRecord<byte[], byte[]>> consume(String topic, int partitions, int count, Map<String, Object> extra) {
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(extra)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(topic, p));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
            long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
            while (out.size() < count) {
                check(System.currentTimeMillis() < deadline, "consumed " + out.size() + " of " + count + " from " + topic);
                consumer.poll(Duration.ofMillis(200)).forEach(out::add);
            }
            return out;
        }
    }

    static void roundtrip() throws Exception {
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            String topic = "java-" + codec;
            createTopic(topic, 1, Map.of());
            List<Msg> sent = new ArrayList<>();
            for (int i = 0; i < 300; i++) sent.add(messageFor(i));
            try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec, ProducerConfig.BATCH_SIZE_CONFIG, 4096))) {
                send(p, topic, 0, sent);
            }
            List<ConsumerRecord<byte[], byte[]>> got = consume(topic, 1, sent.size(), Map.of());
            check(got.size() == sent.size(), codec + ": wrong count " + got.size());
            for (int i = 0; i < got.size(); i++) {
                check(got.get(i).offset() == i, codec + ": offset " + got.get(i).offset() + " at " + i);
                check(sent.get(i).sameAs(got.get(i)), codec + ": message " + i + " differs");
            }
        }
    }

    static void bigOrderingTimestamps() throws Exception {
        createTopic("java-big", 1, Map.of("max.message.bytes", "2097152"));
        List<Msg> big = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            byte[] v = new byte[1 << 20];
            for (int j = 0; j < v.length; j++) v[j] = (byte) ((j * 31 + i) % 256);
            big.add(new Msg(new byte[] {(byte) i}, v, List.of(), 1_700_000_000_000L + 1000L * i));
        }
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 4 << 20))) {
            send(p, "java-big", 0, big);
        }
        List<ConsumerRecord<byte[], byte[]>> got = consume("java-big", 1, 4, Map.of(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 1 << 20));
        for (int i = 0; i < 4; i++) check(big.get(i).sameAs(got.get(i)), "1 MiB message " + i + " differs");

        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            TopicPartition tp = new TopicPartition("java-big", 0);
            Map<TopicPartition, OffsetAndTimestamp> found = c.offsetsForTimes(Map.of(tp, 1_700_000_000_000L + 1500));
            check(found.get(tp) != null && found.get(tp).offset() == 2, "offsetsForTimes -> " + found.get(tp));
            check(c.endOffsets(List.of(tp)).get(tp) == 4, "endOffsets");
            check(c.beginningOffsets(List.of(tp)).get(tp) == 0, "beginningOffsets");
        }

        createTopic("java-ordered", 1, Map.of());
        List<Msg> ordered = new ArrayList<>();
        for (int i = 0; i < 20000; i++) ordered.add(new Msg(null, Integer.toString(i).getBytes(StandardCharsets.UTF_8), List.of(), 1_700_000_000_000L));
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.LINGER_MS_CONFIG, 0, ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 1))) {
            send(p, "java-ordered", 0, ordered);
        }
        List<ConsumerRecord<byte[], byte[]>> inOrder = consume("java-ordered", 1, ordered.size(), Map.of());
        for (int i = 0; i < inOrder.size(); i++) {
            check(inOrder.get(i).offset() == i && new String(inOrder.get(i).value(), StandardCharsets.UTF_8).equals(Integer.toString(i)), "order broken at " + i);
        }
    }

    static void adminAndAutoCreate() throws Exception {
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            send(p, "java-auto", null, List.of(messageFor(1), messageFor(2)));
        }
        try (Admin admin = admin()) {
            check(admin.listTopics().names().get().contains("java-auto"), "auto-created topic listed");
            TopicDescription d = admin.describeTopics(List.of("java-auto")).allTopicNames().get().get("java-auto");
            check(d.partitions().size() == 1, "partitions " + d.partitions().size());
            admin.createPartitions(Map.of("java-auto", NewPartitions.increaseTo(3))).all().get();
            admin.incrementalAlterConfigs(Map.of(
                new org.apache.kafka.common.config.ConfigResource(org.apache.kafka.common.config.ConfigResource.Type.TOPIC, "java-auto"),
                List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET)))).all().get();
            Config config = admin.describeConfigs(List.of(new org.apache.kafka.common.config.ConfigResource(
                org.apache.kafka.common.config.ConfigResource.Type.TOPIC, "java-auto"))).all().get().values().iterator().next();
            check("3600000".equals(config.get("retention.ms").value()), "retention.ms not applied");
            DeleteRecordsResult deleted = admin.deleteRecords(Map.of(new TopicPartition("java-auto", 0), RecordsToDelete.beforeOffset(1)));
            check(deleted.all().get() == null, "deleteRecords");
            Collection<Node> nodes = admin.describeCluster().nodes().get();
            check(nodes.size() == 1, "cluster nodes " + nodes.size());
            admin.deleteTopics(List.of("java-auto")).all().get();
            check(!admin.listTopics().names().get().contains("java-auto"), "deleted topic still listed");
        }
    }

    static void restart() throws Exception {
        createTopic("java-restart", 2, Map.of());
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.RECONNECT_BACKOFF_MS_CONFIG, 50, ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000))) {
            List<Msg> first = new ArrayList<>();
            for (int i = 0; i < 500; i++) first.add(new Msg(null, ("m" + i).getBytes(StandardCharsets.UTF_8), List.of(), 1_700_000_000_000L));
            send(p, "java-restart", null, first);
            System.out.println("READY");
            System.out.flush();
            Scanner in = new Scanner(System.in);
            check(in.nextLine().trim().equals("RESTARTED"), "harness did not restart the broker");
            List<Msg> second = new ArrayList<>();
            for (int i = 500; i < 1000; i++) second.add(new Msg(null, ("m" + i).getBytes(StandardCharsets.UTF_8), List.of(), 1_700_000_000_000L));
            send(p, "java-restart", null, second);
        }
        Set<String> values = new TreeSet<>();
        List<ConsumerRecord<byte[], byte[]>> got = consume("java-restart", 2, 1000, Map.of());
        for (ConsumerRecord<byte[], byte[]> r : got) values.add(new String(r.value(), StandardCharsets.UTF_8));
        check(got.size() == 1000 && values.size() == 1000, "lost or duplicated across the restart: " + got.size() + " records, " + values.size() + " distinct");
    }

    /** A group member polled from the main thread, recording what its listener saw. */
    static final class Member {
        final KafkaConsumer<byte[], byte[]> consumer;
        final Set<TopicPartition> owned = new TreeSet<>(Comparator.comparing(TopicPartition::partition));
        int revocations = 0;
        final Map<TopicPartition, Long> processed = new HashMap<>();

        Member(String group, String instance, String topic) {
            this(group, instance, topic, 300000);
        }

        Member(String group, String instance, String topic, int rebalanceTimeoutMs) {
            Map<String, Object> config = new HashMap<>();
            config.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, rebalanceTimeoutMs);
            config.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            config.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000);
            config.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500);
            config.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10);
            if (instance != null) config.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
            consumer = consumer(config);
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    if (!partitions.isEmpty()) revocations++;
                    owned.removeAll(partitions);
                }
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    owned.addAll(partitions);
                }
            });
        }

        /** Polls once; commits what it processed, synchronously or not. */
        int poll(boolean sync) {
            ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(10));
            for (ConsumerRecord<byte[], byte[]> r : records) {
                processed.merge(new TopicPartition(r.topic(), r.partition()), 1L, Long::sum);
            }
            if (!records.isEmpty()) {
                if (sync) consumer.commitSync();
                else consumer.commitAsync((offsets, error) -> check(error == null, "async commit failed: " + error));
            }
            return records.count();
        }
    }

    static void pollUntil(String what, List<Member> members, java.util.function.BooleanSupplier done) {
        long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
        int i = 0;
        while (!done.getAsBoolean()) {
            check(System.currentTimeMillis() < deadline, "timed out waiting for " + what);
            members.get(i++ % members.size()).poll(i % 2 == 0);
        }
    }

    static void groups() throws Exception {
        String topic = "java-group";
        createTopic(topic, 4, Map.of());
        List<Msg> messages = new ArrayList<>();
        for (int i = 0; i < 400; i++) messages.add(new Msg(null, ("m" + i).getBytes(StandardCharsets.UTF_8), List.of(), 1_700_000_000_000L));
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            for (int part = 0; part < 4; part++) send(p, topic, part, messages.subList(part * 100, part * 100 + 100));
        }
        Member a = new Member("jg", "static-a", topic);
        pollUntil("A owning every partition", List.of(a), () -> a.owned.size() == 4);
        Member b = new Member("jg", "static-b", topic);
        pollUntil("A and B sharing the partitions", List.of(a, b), () -> a.owned.size() == 2 && b.owned.size() == 2);
        check(a.revocations >= 1, "A's listener saw no revocation");
        pollUntil("all messages processed", List.of(a, b), () -> {
            long total = 0;
            for (long n : a.processed.values()) total += n;
            for (long n : b.processed.values()) total += n;
            return total >= 400;
        });
        a.consumer.commitSync();
        b.consumer.commitSync();

        // B's process restarts: a static member closes without leaving and comes back.
        Set<TopicPartition> bOwned = new HashSet<>(b.owned);
        int aRevocations = a.revocations;
        b.consumer.close();
        Member b2 = new Member("jg", "static-b", topic);
        pollUntil("the restarted static member getting its partitions back", List.of(a, b2), () -> b2.owned.equals(bOwned));
        for (int i = 0; i < 20; i++) a.poll(true);
        check(a.revocations == aRevocations, "A went through a rebalance when static B restarted");
        int fresh = 0;
        for (int i = 0; i < 20; i++) fresh += b2.poll(true);
        check(fresh == 0, "the restarted member re-read " + fresh + " committed messages");

        try (Admin admin = admin()) {
            Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets("jg").partitionsToOffsetAndMetadata().get();
            check(committed.size() == 4, "committed partitions: " + committed);
            for (OffsetAndMetadata o : committed.values()) check(o.offset() == 100, "committed offset " + o.offset());
            ConsumerGroupDescription description = admin.describeConsumerGroups(List.of("jg")).all().get().get("jg");
            check(description.members().size() == 2, "members " + description.members().size());
            check(description.groupState().toString().equalsIgnoreCase("stable"), "state " + description.groupState());
        }
        a.consumer.close();
        b2.consumer.close();
    }

    /** Time from a fourth consumer's subscribe to all four owning partitions (bench). */
    static void rebalanceBench() throws Exception {
        String topic = "java-rb";
        createTopic(topic, 8, Map.of());
        for (int round = 0; round < 5; round++) {
            String group = "java-rb-" + round;
            List<Member> members = new ArrayList<>();
            for (int i = 0; i < 3; i++) members.add(new Member(group, null, topic, 30000));
            pollUntil("three members sharing the topic", members, () -> members.stream().allMatch(m -> !m.owned.isEmpty())
                && members.stream().mapToInt(m -> m.owned.size()).sum() == 8);
            long start = System.nanoTime();
            members.add(new Member(group, null, topic, 30000));
            pollUntil("four members sharing the topic", members, () -> members.stream().allMatch(m -> !m.owned.isEmpty())
                && members.stream().mapToInt(m -> m.owned.size()).sum() == 8);
            System.out.println("REBALANCE_MS " + (System.nanoTime() - start) / 1_000_000.0);
            for (Member m : members) m.consumer.close(Duration.ZERO);
        }
    }

    /**
     * Idempotent producer (the client's default) sending TOTAL numbered 100-byte messages to
     * TOPIC while the harness kills and restarts the broker. Prints "ACKED n" every 10,000
     * acknowledgements so the harness knows when to strike, then writes one line per message,
     * "partition offset" (offset -1 if it failed), to ACK_FILE. The harness checks the log.
     */
    static void idempotentCrashes(String topic, int total, String ackFile) throws Exception {
        int[] partitions = new int[total];
        long[] offsets = new long[total];
        Arrays.fill(offsets, -1);
        AtomicInteger acked = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        Map<String, Object> config = Map.of(
            ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
            ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 300000,
            ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000,
            ProducerConfig.MAX_BLOCK_MS_CONFIG, 300000,
            ProducerConfig.RECONNECT_BACKOFF_MS_CONFIG, 50,
            ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
        try (KafkaProducer<byte[], byte[]> producer = producer(config)) {
            for (int i = 0; i < total; i++) {
                final int id = i;
                byte[] value = new byte[100];
                ByteBuffer.wrap(value).putLong(id);
                byte[] key = ("k" + (id % 64)).getBytes(StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(topic, key, value), (metadata, error) -> {
                    if (error != null) {
                        failed.incrementAndGet();
                        if (errors.size() < 10) errors.add(id + ": " + error);
                        return;
                    }
                    partitions[id] = metadata.partition();
                    offsets[id] = metadata.offset();
                    int n = acked.incrementAndGet();
                    if (n % 10000 == 0) {
                        System.out.println("ACKED " + n);
                        System.out.flush();
                    }
                });
            }
            producer.flush();
        }
        try (PrintWriter out = new PrintWriter(ackFile, StandardCharsets.UTF_8)) {
            for (int i = 0; i < total; i++) out.println(partitions[i] + " " + offsets[i]);
        }
        System.out.println("DONE acked=" + acked.get() + " failed=" + failed.get() + " " + errors);
    }

    /**
     * Log compaction seen by the Java client: 1,000 keys updated 100 times and 100 of them
     * deleted, sent by an idempotent producer to TOPIC (created compacted by the harness);
     * then a consumer from the beginning must see, once the cleaner has run, exactly the
     * latest value of each live key and one tombstone per deleted key, offsets strictly
     * increasing; and, after delete.retention.ms, no tombstone at all.
     */
    static void compacted(String topic) throws Exception {
        try (KafkaProducer<byte[], byte[]> producer = producer(Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd",
                ProducerConfig.BATCH_SIZE_CONFIG, 16384))) {
            for (int version = 0; version < 100; version++) {
                for (int key = 0; key < 1000; key++) {
                    producer.send(new ProducerRecord<>(topic, 0, ("key-" + key).getBytes(StandardCharsets.UTF_8),
                        ("value-" + key + "-" + version + "-padding-padding-padding").getBytes(StandardCharsets.UTF_8)));
                }
            }
            for (int key = 0; key < 100; key++) {
                producer.send(new ProducerRecord<>(topic, 0, ("key-" + key).getBytes(StandardCharsets.UTF_8), null));
            }
            // Fill a segment past segment.bytes (with incompressible bytes) so that everything
            // above is in inactive segments, which the cleaner may compact.
            Random random = new Random(7);
            for (int i = 0; i < 200; i++) {
                byte[] noise = new byte[1024];
                random.nextBytes(noise);
                producer.send(new ProducerRecord<>(topic, 0, "filler".getBytes(StandardCharsets.UTF_8), noise));
            }
            producer.flush();
        }
        long deadline = System.currentTimeMillis() + 120_000;
        String last = "";
        boolean sawTombstones = false;
        while (true) {
            check(System.currentTimeMillis() < deadline, "compaction not observed in time; last: " + last);
            Map<String, String> latest = new HashMap<>();
            int tombstones = 0, live = 0, duplicates = 0;
            long previous = -1;
            try (KafkaConsumer<byte[], byte[]> consumer = consumer(Map.of())) {
                TopicPartition tp = new TopicPartition(topic, 0);
                consumer.assign(List.of(tp));
                consumer.seekToBeginning(List.of(tp));
                long end = consumer.endOffsets(List.of(tp)).get(tp);
                while (consumer.position(tp) < end) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                        check(r.offset() > previous, "offset " + r.offset() + " after " + previous);
                        previous = r.offset();
                        String key = new String(r.key(), StandardCharsets.UTF_8);
                        if (key.equals("filler")) continue;
                        if (latest.containsKey(key)) duplicates++;
                        if (r.value() == null) { tombstones++; latest.put(key, null); }
                        else { live++; latest.put(key, new String(r.value(), StandardCharsets.UTF_8)); }
                    }
                }
            }
            for (int key = 0; key < 1000; key++) {
                String v = latest.get("key-" + key);
                if (key >= 100) check(("value-" + key + "-99-padding-padding-padding").equals(v), "key-" + key + " replays to " + v);
                else check(v == null, "deleted key-" + key + " replays to " + v);
            }
            last = "live=" + live + " tombstones=" + tombstones + " duplicates=" + duplicates;
            if (duplicates == 0 && live == 900 && tombstones == 100) sawTombstones = true;
            if (duplicates == 0 && live == 900 && tombstones == 0) {
                check(sawTombstones, "tombstones vanished before they were seen compacted: " + last);
                break;
            }
            Thread.sleep(500);
        }
    }

    public static void main(String[] args) throws Exception {
        check(args.length >= 2, "usage: JavaClientCheck BOOTSTRAP SCENARIO [ARGS...]");
        bootstrap = args[0];
        switch (args[1]) {
            case "roundtrip" -> roundtrip();
            case "big-ordering-timestamps" -> bigOrderingTimestamps();
            case "admin-auto-create" -> adminAndAutoCreate();
            case "restart" -> restart();
            case "groups" -> groups();
            case "rebalance-bench" -> rebalanceBench();
            case "idempotent-crashes" -> idempotentCrashes(args[2], Integer.parseInt(args[3]), args[4]);
            case "compacted" -> compacted(args[2]);
            default -> check(false, "unknown scenario " + args[1]);
        }
        System.out.println("OK");
        System.exit(0);
    }
}
