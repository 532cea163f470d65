package io.camundarelay.engine;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import org.springframework.boot.context.event.ApplicationEnvironmentPreparedEvent;
import org.springframework.boot.ssl.pem.PemContent;
import org.springframework.context.ApplicationListener;
import org.springframework.core.env.ConfigurableEnvironment;
import org.springframework.core.env.MapPropertySource;

/**
 * HTTPS from the {@code CAMUNDA_TLS_*} settings ({@code relay.tls.*} in application.yaml).
 *
 * <p>Either a certificate chain and its private key in PEM ({@code CAMUNDA_TLS_CERTIFICATE},
 * {@code CAMUNDA_TLS_KEY}; the key unencrypted) or a PKCS#12 file with its password ({@code
 * CAMUNDA_TLS_KEYSTORE}, {@code CAMUNDA_TLS_KEYSTORE_PASSWORD}). The files are read here, before
 * anything starts, so a missing or unreadable one is refused in one line ({@link
 * StartupCheck#refuse}); then they become Spring Boot's {@code server.ssl.*} properties and the
 * whole port (REST API and webapps) speaks HTTPS only. Nothing set: plain HTTP, as before.
 */
public class TlsSettings implements ApplicationListener<ApplicationEnvironmentPreparedEvent> {

  @Override
  public void onApplicationEvent(ApplicationEnvironmentPreparedEvent event) {
    ConfigurableEnvironment env = event.getEnvironment();
    String certificate = env.getProperty("relay.tls.certificate", "").trim();
    String key = env.getProperty("relay.tls.key", "").trim();
    String keystore = env.getProperty("relay.tls.keystore", "").trim();
    String keystorePassword = env.getProperty("relay.tls.keystore-password", "");
    if (certificate.isEmpty() && key.isEmpty() && keystore.isEmpty()) {
      return;
    }
    Map<String, Object> ssl = new LinkedHashMap<>();
    ssl.put("server.ssl.enabled", "true");
    if (!keystore.isEmpty()) {
      if (!certificate.isEmpty() || !key.isEmpty()) {
        StartupCheck.refuse(
            "set either CAMUNDA_TLS_CERTIFICATE and CAMUNDA_TLS_KEY (PEM) or CAMUNDA_TLS_KEYSTORE"
                + " (PKCS#12), not both");
      }
      Path file = readable("CAMUNDA_TLS_KEYSTORE", keystore);
      checkKeystore(file, keystorePassword);
      ssl.put("server.ssl.key-store", "file:" + file);
      ssl.put("server.ssl.key-store-type", "PKCS12");
      ssl.put("server.ssl.key-store-password", keystorePassword);
    } else {
      if (certificate.isEmpty() || key.isEmpty()) {
        StartupCheck.refuse("CAMUNDA_TLS_CERTIFICATE and CAMUNDA_TLS_KEY go together: set both");
      }
      Path certificateFile = readable("CAMUNDA_TLS_CERTIFICATE", certificate);
      Path keyFile = readable("CAMUNDA_TLS_KEY", key);
      checkPem(certificateFile, keyFile);
      ssl.put("server.ssl.certificate", "file:" + certificateFile);
      ssl.put("server.ssl.certificate-private-key", "file:" + keyFile);
    }
    env.getPropertySources()
        .addLast(new MapPropertySource("camunda-relay-tls", Collections.unmodifiableMap(ssl)));
  }

  private static Path readable(String setting, String value) {
    Path file = Path.of(value).toAbsolutePath();
    if (!Files.isRegularFile(file) || !Files.isReadable(file)) {
      StartupCheck.refuse(setting + " " + value + ": no readable file there");
    }
    return file;
  }

  private static void checkPem(Path certificate, Path key) {
    try {
      PemContent chain = PemContent.load(certificate);
      if (chain == null || chain.getCertificates().isEmpty()) {
        StartupCheck.refuse("CAMUNDA_TLS_CERTIFICATE " + certificate + ": no PEM certificate in it");
      }
    } catch (IOException | RuntimeException error) {
      StartupCheck.refuse(
          "CAMUNDA_TLS_CERTIFICATE " + certificate + ": no PEM certificate in it (" + reason(error)
              + ")");
    }
    try {
      PemContent privateKey = PemContent.load(key);
      if (privateKey == null || privateKey.getPrivateKey() == null) {
        StartupCheck.refuse("CAMUNDA_TLS_KEY " + key + ": no unencrypted PEM private key in it");
      }
    } catch (IOException | RuntimeException error) {
      StartupCheck.refuse(
          "CAMUNDA_TLS_KEY " + key + ": no unencrypted PEM private key in it (" + reason(error)
              + ")");
    }
  }

  private static void checkKeystore(Path file, String password) {
    try (InputStream in = Files.newInputStream(file)) {
      KeyStore store = KeyStore.getInstance("PKCS12");
      store.load(in, password.toCharArray());
      for (String alias : Collections.list(store.aliases())) {
        if (store.isKeyEntry(alias)) {
          return;
        }
      }
      StartupCheck.refuse("CAMUNDA_TLS_KEYSTORE " + file + ": holds no private key");
    } catch (IOException | GeneralSecurityException error) {
      StartupCheck.refuse(
          "CAMUNDA_TLS_KEYSTORE "
              + file
              + ": cannot open it as PKCS#12 with CAMUNDA_TLS_KEYSTORE_PASSWORD ("
              + reason(error)
              + ")");
    }
  }

  private static String reason(Exception error) {
    String message = error.getMessage();
    return message == null || message.isBlank() ? error.getClass().getSimpleName() : message;
  }
}
