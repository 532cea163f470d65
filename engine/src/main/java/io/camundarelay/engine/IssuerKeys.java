package io.camundarelay.engine;

import com.nimbusds.jose.KeySourceException;
import com.nimbusds.jose.jwk.JWK;
import com.nimbusds.jose.jwk.JWKSelector;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.source.JWKSource;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jose.util.DefaultResourceRetriever;
import com.nimbusds.jose.util.JSONObjectUtils;
import com.nimbusds.jose.util.ResourceRetriever;
import java.io.IOException;
import java.net.URI;
import java.net.URL;
import java.text.ParseException;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The JWT issuer's signing keys, asked for in the background: no request thread ever waits
 * on the identity provider longer than one bounded fetch.
 *
 * <p>One daemon thread reads the issuer's OpenID configuration ({@code
 * <issuer>/.well-known/openid-configuration}, whose {@code issuer} must be the configured one)
 * and the JWK set it names: at start, then every {@link #REFRESH}; while that fails, again after
 * 5 s, doubling to {@link #MAX_RETRY} (a WARN line each time, naming the issuer and the kind of
 * failure). Every call to the issuer has a connect timeout of {@link #CONNECT_TIMEOUT}, a read
 * timeout of {@link #READ_TIMEOUT} and a size limit. Until the first JWK set arrives the issuer
 * is unknown ({@link #known()} false) and bearer tokens are refused at once; a failed refresh
 * keeps the keys already known.
 *
 * <p>A token whose key id is not in the set (the issuer rotated its keys, or the id is forged)
 * asks for the set again, at most once per {@link #MIN_REFETCH}, on the same background
 * thread: up to {@link #WAITERS} requests wait for that one fetch (bounded by the timeouts);
 * any other request with an unknown key id is refused without one. So forged key ids cost the
 * issuer one fetch per {@link #MIN_REFETCH} and the engine at most {@link #WAITERS} waiting
 * request threads.
 */
final class IssuerKeys implements JWKSource<SecurityContext> {

  static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(2);
  static final Duration READ_TIMEOUT = Duration.ofSeconds(3);
  static final Duration REFRESH = Duration.ofMinutes(5);
  static final Duration MIN_REFETCH = Duration.ofSeconds(10);
  static final Duration FIRST_RETRY = Duration.ofSeconds(5);
  static final Duration MAX_RETRY = Duration.ofMinutes(1);
  static final int WAITERS = 8;
  private static final int SIZE_LIMIT = 512 * 1024;

  private static final Logger LOG = LoggerFactory.getLogger(IssuerKeys.class);

  private final String issuer;
  private final ResourceRetriever retriever;
  private final ScheduledExecutorService fetcher;
  private final Semaphore waiters = new Semaphore(WAITERS);
  private volatile JWKSet keys;
  private volatile URL jwksUri;
  private Duration retry = FIRST_RETRY;
  private long lastRefetch = System.nanoTime() - MIN_REFETCH.toNanos();
  private CompletableFuture<Void> refetching;

  IssuerKeys(String issuer) {
    this.issuer = issuer;
    this.retriever =
        new DefaultResourceRetriever(
            (int) CONNECT_TIMEOUT.toMillis(), (int) READ_TIMEOUT.toMillis(), SIZE_LIMIT);
    this.fetcher =
        Executors.newSingleThreadScheduledExecutor(
            task -> {
              Thread thread = new Thread(task, "jwt-issuer-keys");
              thread.setDaemon(true);
              return thread;
            });
  }

  /** Starts asking the issuer, in the background; returns at once. */
  IssuerKeys start() {
    fetcher.execute(this::refresh);
    return this;
  }

  /** Whether the issuer's keys have been fetched at least once. */
  boolean known() {
    return keys != null;
  }

  String issuer() {
    return issuer;
  }

  @Override
  public List<JWK> get(JWKSelector selector, SecurityContext context) throws KeySourceException {
    JWKSet current = keys;
    if (current == null) {
      return List.of();
    }
    List<JWK> found = selector.select(current);
    if (!found.isEmpty()) {
      return found;
    }
    CompletableFuture<Void> fetch = refetch();
    if (fetch == null || !waiters.tryAcquire()) {
      return found;
    }
    try {
      fetch.get(CONNECT_TIMEOUT.plus(READ_TIMEOUT).toMillis(), TimeUnit.MILLISECONDS);
    } catch (ExecutionException | TimeoutException error) {
      return found;
    } catch (InterruptedException error) {
      Thread.currentThread().interrupt();
      return found;
    } finally {
      waiters.release();
    }
    return selector.select(keys);
  }

  /** The fetch of the JWK set for an unknown key id: the one under way, a new one, or null. */
  private synchronized CompletableFuture<Void> refetch() {
    if (refetching != null && !refetching.isDone()) {
      return refetching;
    }
    long now = System.nanoTime();
    if (now - lastRefetch < MIN_REFETCH.toNanos()) {
      return null;
    }
    lastRefetch = now;
    refetching =
        CompletableFuture.runAsync(
            () -> {
              try {
                fetchKeys();
              } catch (IOException | ParseException | RuntimeException error) {
                warn(error);
              }
            },
            fetcher);
    return refetching;
  }

  /** The scheduled refresh: the configuration and the keys, then the next one scheduled. */
  private void refresh() {
    Duration next = REFRESH;
    try {
      jwksUri = discover();
      fetchKeys();
      retry = FIRST_RETRY;
    } catch (IOException | ParseException | RuntimeException error) {
      warn(error);
      next = retry;
      retry = min(retry.multipliedBy(2), MAX_RETRY);
    }
    fetcher.schedule(this::refresh, next.toMillis(), TimeUnit.MILLISECONDS);
  }

  private URL discover() throws IOException, ParseException {
    URL where = URI.create(issuer + "/.well-known/openid-configuration").toURL();
    Map<String, Object> configuration =
        JSONObjectUtils.parse(retriever.retrieveResource(where).getContent());
    if (!issuer.equals(JSONObjectUtils.getString(configuration, "issuer"))) {
      throw new IllegalStateException("its OpenID configuration names another issuer");
    }
    URI jwks = JSONObjectUtils.getURI(configuration, "jwks_uri");
    if (jwks == null || !jwks.getScheme().matches("https?")) {
      throw new IllegalStateException("its OpenID configuration has no http(s) jwks_uri");
    }
    return jwks.toURL();
  }

  private void fetchKeys() throws IOException, ParseException {
    URL where = jwksUri;
    if (where == null) {
      throw new IllegalStateException("its OpenID configuration has not been read yet");
    }
    boolean first = keys == null;
    keys = JWKSet.parse(retriever.retrieveResource(where).getContent());
    if (first) {
      LOG.info("JWT issuer {}: {} signing key(s) fetched", issuer, keys.size());
    }
  }

  private void warn(Exception error) {
    String kind =
        error instanceof IllegalStateException ? error.getMessage() : rootCause(error);
    LOG.warn(
        "the JWT issuer {} cannot be asked for its keys ({}): {}",
        issuer,
        kind,
        keys == null
            ? "bearer tokens are refused until it answers"
            : "the keys fetched before stay in use");
  }

  private static Duration min(Duration a, Duration b) {
    return a.compareTo(b) <= 0 ? a : b;
  }

  static String rootCause(Throwable error) {
    Throwable cause = error;
    while (cause.getCause() != null) {
      cause = cause.getCause();
    }
    return cause.getClass().getSimpleName();
  }
}
