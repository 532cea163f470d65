package io.camundarelay.engine;

import java.net.InetAddress;
import java.net.UnknownHostException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.context.event.ApplicationEnvironmentPreparedEvent;
import org.springframework.context.ApplicationListener;
import org.springframework.core.env.Environment;

/**
 * Refuses settings that would expose the engine, before anything starts (no database, no port).
 *
 * <ul>
 *   <li>A non-loopback bind address ({@code CAMUNDA_BIND_ADDRESS}, {@code server.address}; unset
 *       means every interface) with the default password {@code demo} for the administrator or
 *       the worker user: refused.
 *   <li>A worker user without a password, or the same id as the administrator: refused.
 *   <li>A tenant id in {@code CAMUNDA_WORKER_TENANTS} that is not letters and digits
 *       (Camunda's default id pattern): refused.
 *   <li>{@code CAMUNDA_JWT_ISSUER_URI} that is not an http(s) URL, or set while the REST API's
 *       authentication is off ({@code CAMUNDA_REST_BASIC_AUTH=false}), or set without {@code
 *       CAMUNDA_JWT_AUDIENCE} or {@code CAMUNDA_JWT_ALLOWED_CLIENTS} (every token the issuer
 *       signs, for any of its clients, would log in): refused.
 *   <li>The REST API's Basic authentication switched off ({@code CAMUNDA_REST_BASIC_AUTH=false}):
 *       a WARN line, since every request then runs without a user and so passes every
 *       authorization check.
 * </ul>
 *
 * <p>A refusal is one line on stderr starting with {@link #REFUSAL}, and exit code 2; the
 * Python side ({@code bundled_engine.py}) shows that line alone.
 */
public class StartupCheck implements ApplicationListener<ApplicationEnvironmentPreparedEvent> {

  /** The start of a refusal line; bundled_engine.py looks for it in the engine log. */
  public static final String REFUSAL = "camunda-relay engine: refusing to start: ";

  static final String DEFAULT_PASSWORD = "demo";

  /** engine_options.py's NO_AUDIENCE refuses the same, in the same words. */
  static final String NO_AUDIENCE =
      "CAMUNDA_JWT_ISSUER_URI is set without CAMUNDA_JWT_AUDIENCE or CAMUNDA_JWT_ALLOWED_CLIENTS:"
          + " every token the issuer signs, for any of its clients, would log in; set the"
          + " audience the engine's tokens carry, or the client ids (azp) allowed";

  private static final Logger LOG = LoggerFactory.getLogger(StartupCheck.class);

  @Override
  public void onApplicationEvent(ApplicationEnvironmentPreparedEvent event) {
    Environment env = event.getEnvironment();
    String address = env.getProperty("server.address", "").trim();
    boolean loopback = isLoopback(address);
    String shownAddress = address.isEmpty() ? "(every interface)" : address;
    if (!env.getProperty("relay.rest.basic-auth", Boolean.class, true)) {
      LOG.warn(
          "CAMUNDA_REST_BASIC_AUTH=false: the REST API /engine-rest accepts requests without a"
              + " login, and such requests pass every authorization check: anyone who can reach"
              + " {} port {} has full access to the engine",
          shownAddress,
          env.getProperty("server.port", "8080"));
    }
    String admin = env.getProperty("camunda.bpm.admin-user.id", "");
    String worker = env.getProperty("relay.worker.user", "").trim();
    String workerPassword = env.getProperty("relay.worker.password", "");
    if (!worker.isEmpty() && workerPassword.isEmpty()) {
      refuse("CAMUNDA_WORKER_USER is set but CAMUNDA_WORKER_PASSWORD is not");
    }
    if (!worker.isEmpty() && worker.equals(admin)) {
      refuse(
          "CAMUNDA_WORKER_USER '" + worker + "' is the administrator (CAMUNDA_USER): the worker"
              + " user needs an id of its own");
    }
    for (String tenant : WorkerAccess.tenantIds(env.getProperty("relay.worker.tenants", ""))) {
      if (!tenant.matches("[a-zA-Z0-9]+")) {
        refuse(
            "CAMUNDA_WORKER_TENANTS: tenant id '" + tenant + "' may have letters and digits"
                + " only");
      }
    }
    checkJwt(env);
    if (loopback) {
      return;
    }
    String where = "the engine would listen on " + shownAddress + ", not only on loopback";
    if (DEFAULT_PASSWORD.equals(env.getProperty("camunda.bpm.admin-user.password"))) {
      refuse(
          where + ", and the administrator '" + admin + "' has the default password: set"
              + " CAMUNDA_PASSWORD");
    }
    if (!worker.isEmpty() && DEFAULT_PASSWORD.equals(workerPassword)) {
      refuse(
          where + ", and the worker user '" + worker + "' has the default password: set"
              + " CAMUNDA_WORKER_PASSWORD");
    }
  }

  private static void checkJwt(Environment env) {
    String issuer = env.getProperty("relay.jwt.issuer-uri", "").trim();
    if (issuer.isEmpty()) {
      return;
    }
    if (!issuer.matches("https?://[^/\\s]+(/\\S*)?")) {
      refuse("CAMUNDA_JWT_ISSUER_URI must be an http:// or https:// URL: " + issuer);
    }
    boolean noAudience = env.getProperty("relay.jwt.audience", "").isBlank();
    String clients = env.getProperty("relay.jwt.allowed-clients", "");
    if (noAudience && JwtChecks.clientIds(clients).isEmpty()) {
      refuse(NO_AUDIENCE);
    }
    if (!env.getProperty("relay.rest.basic-auth", Boolean.class, true)) {
      refuse(
          "CAMUNDA_JWT_ISSUER_URI is set but CAMUNDA_REST_BASIC_AUTH=false switches the REST"
              + " API's authentication off");
    }
  }

  /** Whether the bind address is a loopback address; empty (every interface) is not. */
  static boolean isLoopback(String address) {
    if (address.isEmpty()) {
      return false;
    }
    try {
      return InetAddress.getByName(address).isLoopbackAddress();
    } catch (UnknownHostException error) {
      refuse("CAMUNDA_BIND_ADDRESS " + address + " is not an address of this host");
      return false;
    }
  }

  /** One line on stderr and exit code 2: nothing has started yet, so nothing needs stopping. */
  static void refuse(String reason) {
    System.err.println(REFUSAL + reason);
    System.err.flush();
    System.exit(2);
  }
}
