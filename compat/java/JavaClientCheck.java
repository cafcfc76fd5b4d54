// The official Java client (kafka-clients 4.3.0) against a running Sluice broker.
//
// Usage: java JavaClientCheck BOOTSTRAP SCENARIO
// Run by compat/tests/java.rs, which starts the broker. Exits 1 with a message on the first
// failed check.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.Future;

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
        // Idempotence (the default since 3.0) needs InitProducerId, not served yet.
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
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

    public static void main(String[] args) throws Exception {
        check(args.length == 2, "usage: JavaClientCheck BOOTSTRAP SCENARIO");
        bootstrap = args[0];
        switch (args[1]) {
            case "roundtrip" -> roundtrip();
            case "big-ordering-timestamps" -> bigOrderingTimestamps();
            case "admin-auto-create" -> adminAndAutoCreate();
            case "restart" -> restart();
            default -> check(false, "unknown scenario " + args[1]);
        }
        System.out.println("OK");
        System.exit(0);
    }
}
