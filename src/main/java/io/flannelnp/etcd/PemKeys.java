package io.flannelnp.etcd;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.interfaces.ECPublicKey;
import java.security.interfaces.RSAPrivateCrtKey;
import java.security.interfaces.RSAPublicKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The etcd client's key and certificate from PEM files, in every form openssl and etcd's own
 * tooling write: PKCS#8 ("PRIVATE KEY"), PKCS#1 RSA ("RSA PRIVATE KEY") and SEC1 EC ("EC PRIVATE
 * KEY", with or without its "EC PARAMETERS" block). Netty takes only PKCS#8 without BouncyCastle,
 * so the other two are re-wrapped as PKCS#8 here. Every failure is a {@link BadPemException} whose
 * message says what is wrong with which file, for the one-line start-up error.
 */
public final class PemKeys {
  private PemKeys() {}

  public static final class BadPemException extends Exception {
    public BadPemException(String message) {
      super(message);
    }
  }

  private static final Pattern BLOCK =
      Pattern.compile("-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\\s]*)-----END \\1-----");
  // rsaEncryption 1.2.840.113549.1.1.1 and id-ecPublicKey 1.2.840.10045.2.1, DER-encoded
  private static final byte[] RSA_ALG = hex("300d06092a864886f70d0101010500");
  private static final byte[] EC_OID = hex("06072a8648ce3d0201");

  /** The private key in {@code file}. */
  public static PrivateKey privateKey(Path file) throws BadPemException {
    String text = read(file);
    Matcher m = BLOCK.matcher(text);
    while (m.find()) {
      String type = m.group(1);
      byte[] der = base64(file, m.group(2));
      switch (type) {
        case "PRIVATE KEY":
          return pkcs8(file, der, "PKCS#8");
        case "RSA PRIVATE KEY":
          return pkcs8(file, seq(concat(hex("020100"), RSA_ALG, octets(der))), "PKCS#1 RSA");
        case "EC PRIVATE KEY":
          return pkcs8(file, seq(concat(hex("020100"), seq(concat(EC_OID, curveOf(file, der))), octets(der))), "SEC1 EC");
        case "ENCRYPTED PRIVATE KEY":
          throw new BadPemException(file + " holds an encrypted key; the plugin cannot ask for a pass phrase"
              + " (write it unencrypted: openssl pkey -in KEY -out KEY.plain)");
        default:
          // "EC PARAMETERS" before an EC key, or a certificate in the same file: look further
      }
    }
    if (text.contains("Proc-Type: 4,ENCRYPTED")) {
      throw new BadPemException(file + " holds an encrypted key; the plugin cannot ask for a pass phrase"
          + " (write it unencrypted: openssl pkey -in KEY -out KEY.plain)");
    }
    throw new BadPemException(file + " holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)");
  }

  /** The certificates in {@code file}, the client's own first. */
  public static List<X509Certificate> certificates(Path file) throws BadPemException {
    String text = read(file);
    try (InputStream in = new java.io.ByteArrayInputStream(text.getBytes(StandardCharsets.US_ASCII))) {
      List<X509Certificate> out = CertificateFactory.getInstance("X.509").generateCertificates(in).stream()
          .map(c -> (X509Certificate) c).toList();
      if (out.isEmpty()) {
        throw new BadPemException(file + " holds no PEM certificate");
      }
      return out;
    } catch (CertificateException | IOException e) {
      throw new BadPemException(file + " holds no readable PEM certificate (" + e.getMessage() + ")");
    }
  }

  /** {@code key} belongs to {@code cert}: else TLS would fail later with an unhelpful handshake error. */
  public static void checkPair(Path certFile, X509Certificate cert, Path keyFile, PrivateKey key) throws BadPemException {
    boolean match;
    if (cert.getPublicKey() instanceof RSAPublicKey pub && key instanceof RSAPrivateCrtKey priv) {
      match = pub.getModulus().equals(priv.getModulus());
    } else if (cert.getPublicKey() instanceof ECPublicKey && key instanceof java.security.interfaces.ECPrivateKey) {
      match = true; // same algorithm; a mismatched EC pair shows as a handshake failure naming the endpoint
    } else {
      match = cert.getPublicKey().getAlgorithm().equals(key.getAlgorithm());
    }
    if (!match) {
      throw new BadPemException(keyFile + " is not the private key of the certificate in " + certFile);
    }
  }

  private static String read(Path file) throws BadPemException {
    try {
      return Files.readString(file, StandardCharsets.ISO_8859_1);
    } catch (IOException e) {
      throw new BadPemException("cannot read " + file + ": " + e.getClass().getSimpleName()
          + (e.getMessage() == null ? "" : " " + e.getMessage()));
    }
  }

  private static byte[] base64(Path file, String body) throws BadPemException {
    try {
      return Base64.getMimeDecoder().decode(body);
    } catch (IllegalArgumentException e) {
      throw new BadPemException(file + " has a PEM block that is not valid base64");
    }
  }

  private static PrivateKey pkcs8(Path file, byte[] der, String form) throws BadPemException {
    for (String alg : new String[] {"RSA", "EC", "Ed25519", "Ed448"}) {
      try {
        return KeyFactory.getInstance(alg).generatePrivate(new PKCS8EncodedKeySpec(der));
      } catch (java.security.GeneralSecurityException | RuntimeException e) {
        // not this algorithm
      }
    }
    throw new BadPemException(file + " holds a " + form + " key that is not a valid RSA, EC or EdDSA private key");
  }

  /** The named-curve OID (tag 06) in the [0] parameters of a SEC1 ECPrivateKey. */
  private static byte[] curveOf(Path file, byte[] sec1) throws BadPemException {
    try {
      int[] outer = header(sec1, 0); // SEQUENCE
      int i = outer[0];
      int end = outer[0] + outer[1];
      while (i < end) {
        int tag = sec1[i] & 0xff;
        int[] h = header(sec1, i);
        if (tag == 0xa0) {
          int[] oid = header(sec1, h[0]);
          return java.util.Arrays.copyOfRange(sec1, h[0], oid[0] + oid[1]);
        }
        i = h[0] + h[1];
      }
    } catch (ArrayIndexOutOfBoundsException e) {
      // falls through to the error below
    }
    throw new BadPemException(file + " holds an EC PRIVATE KEY without its named curve (write it as PKCS#8:"
        + " openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8)");
  }

  /** {contents offset, contents length} of the DER element at {@code at}. */
  private static int[] header(byte[] d, int at) {
    int len = d[at + 1] & 0xff;
    int off = at + 2;
    if (len > 0x80) {
      int n = len & 0x7f;
      len = 0;
      for (int k = 0; k < n; k++) {
        len = (len << 8) | (d[off + k] & 0xff);
      }
      off += n;
    }
    return new int[] {off, len};
  }

  private static byte[] tlv(int tag, byte[] content) {
    ByteArrayOutputStream o = new ByteArrayOutputStream();
    o.write(tag);
    int n = content.length;
    if (n < 0x80) {
      o.write(n);
    } else if (n < 0x100) {
      o.write(0x81);
      o.write(n);
    } else if (n < 0x10000) {
      o.write(0x82);
      o.write(n >> 8);
      o.write(n);
    } else {
      o.write(0x83);
      o.write(n >> 16);
      o.write(n >> 8);
      o.write(n);
    }
    o.writeBytes(content);
    return o.toByteArray();
  }

  private static byte[] seq(byte[] content) {
    return tlv(0x30, content);
  }

  private static byte[] octets(byte[] content) {
    return tlv(0x04, content);
  }

  private static byte[] concat(byte[]... parts) {
    ByteArrayOutputStream o = new ByteArrayOutputStream();
    for (byte[] p : parts) {
      o.writeBytes(p);
    }
    return o.toByteArray();
  }

  private static byte[] hex(String s) {
    return java.util.HexFormat.of().parseHex(s);
  }
}
