package io.camundarelay.engine;

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.stream.Collectors;
import org.camunda.bpm.engine.ProcessEngine;
import org.camunda.bpm.engine.rest.security.auth.AuthenticationProvider;
import org.camunda.bpm.engine.rest.security.auth.AuthenticationResult;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.security.oauth2.core.OAuth2Error;
import org.springframework.security.oauth2.jwt.Jwt;
import org.springframework.security.oauth2.jwt.JwtDecoder;
import org.springframework.security.oauth2.jwt.JwtException;
import org.springframework.security.oauth2.jwt.JwtValidationException;

/**
 * JWT bearer tokens on the REST API, beside HTTP Basic: the engine's authentication provider
 * when {@code CAMUNDA_JWT_ISSUER_URI} is set ({@link RestAuthentication}).
 *
 * <p>A request with {@code Authorization: Bearer <token>} is checked as {@link JwtChecks} says
 * (signature against the issuer's keys, token type, issuer, times, audience, client). The
 * claim {@code CAMUNDA_JWT_USER_CLAIM} (default {@code preferred_username}) names the engine
 * user; the engine's authentication filter then looks up that user's groups and tenants in the
 * identity service, as for Basic, so the user's and its groups' authorizations apply. Any other
 * request goes to Camunda's Basic provider.
 *
 * <p>The issuer's keys are fetched in the background ({@link IssuerKeys}): while the issuer has
 * not answered yet, a bearer token is refused (401) at once, without a call to the issuer; a
 * check waits for the issuer only when its key id is unknown, and only a few checks at a time
 * do. At most {@link #CONCURRENT_CHECKS} tokens are checked at a time; a token beyond that is
 * refused at once. So bearer tokens never hold more than that many request threads, and Basic
 * requests are served whatever the identity provider, or a flood of tokens, does. A refused
 * token is a DEBUG line naming the reason, never the token.
 */
public final class JwtAuthentication implements AuthenticationProvider {

  static final int CONCURRENT_CHECKS = 32;

  private static final String BEARER = "Bearer ";
  private static final Logger LOG = LoggerFactory.getLogger(JwtAuthentication.class);

  private final JwtDecoder decoder;
  private final IssuerKeys keys;
  private final String userClaim;
  private final AuthenticationProvider basic;
  private final Semaphore checks = new Semaphore(CONCURRENT_CHECKS);

  JwtAuthentication(
      JwtDecoder decoder, IssuerKeys keys, String userClaim, AuthenticationProvider basic) {
    this.decoder = decoder;
    this.keys = keys;
    this.userClaim = userClaim;
    this.basic = basic;
  }

  @Override
  public AuthenticationResult extractAuthenticatedUser(
      HttpServletRequest request, ProcessEngine engine) {
    String header = request.getHeader("Authorization");
    if (header == null || !header.regionMatches(true, 0, BEARER, 0, BEARER.length())) {
      return basic.extractAuthenticatedUser(request, engine);
    }
    if (!keys.known()) {
      LOG.debug("bearer token refused: the JWT issuer {} has not answered yet", keys.issuer());
      return AuthenticationResult.unsuccessful();
    }
    if (!checks.tryAcquire()) {
      LOG.debug("bearer token refused: {} tokens are being checked", CONCURRENT_CHECKS);
      return AuthenticationResult.unsuccessful();
    }
    Jwt jwt;
    try {
      jwt = decoder.decode(header.substring(BEARER.length()).trim());
    } catch (JwtValidationException error) {
      LOG.debug("bearer token refused: {}", descriptions(error.getErrors()));
      return AuthenticationResult.unsuccessful();
    } catch (JwtException error) {
      LOG.debug("bearer token refused: {}", reason(error));
      return AuthenticationResult.unsuccessful();
    } finally {
      checks.release();
    }
    String user = jwt.getClaimAsString(userClaim);
    if (user == null || user.isBlank()) {
      LOG.debug("bearer token refused: it has no claim '{}' to name the engine user", userClaim);
      return AuthenticationResult.unsuccessful();
    }
    return AuthenticationResult.successful(user);
  }

  @Override
  public void augmentResponseByAuthenticationChallenge(
      HttpServletResponse response, ProcessEngine engine) {
    basic.augmentResponseByAuthenticationChallenge(response, engine);
    response.addHeader("WWW-Authenticate", "Bearer realm=\"" + engine.getName() + "\"");
  }

  /**
   * What a decoding error says, from a fixed list: Nimbus's messages can quote parts of the
   * token (a header it could not parse), so they are never logged as they are.
   */
  static String reason(JwtException error) {
    String message = String.valueOf(error.getMessage());
    for (String known : KNOWN_REASONS) {
      if (message.contains(known)) {
        return known;
      }
    }
    return error.getClass().getSimpleName();
  }

  private static final List<String> KNOWN_REASONS =
      List.of(
          "Invalid signature",
          "Another algorithm expected, or no matching key(s) found",
          "Malformed token",
          "Unsigned tokens are not supported",
          "Unsupported algorithm of none",
          "JOSE header typ (type)");

  private static String descriptions(Collection<OAuth2Error> errors) {
    return errors.stream().map(OAuth2Error::getDescription).collect(Collectors.joining("; "));
  }
}
