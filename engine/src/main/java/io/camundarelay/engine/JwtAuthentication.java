package io.camundarelay.engine;

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.util.Collection;
import java.util.List;
import java.util.stream.Collectors;
import org.camunda.bpm.engine.ProcessEngine;
import org.camunda.bpm.engine.rest.security.auth.AuthenticationProvider;
import org.camunda.bpm.engine.rest.security.auth.AuthenticationResult;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.security.oauth2.core.DelegatingOAuth2TokenValidator;
import org.springframework.security.oauth2.core.OAuth2Error;
import org.springframework.security.oauth2.core.OAuth2TokenValidator;
import org.springframework.security.oauth2.jwt.Jwt;
import org.springframework.security.oauth2.jwt.JwtClaimNames;
import org.springframework.security.oauth2.jwt.JwtClaimValidator;
import org.springframework.security.oauth2.jwt.JwtDecoder;
import org.springframework.security.oauth2.jwt.JwtDecoderInitializationException;
import org.springframework.security.oauth2.jwt.JwtException;
import org.springframework.security.oauth2.jwt.JwtValidationException;
import org.springframework.security.oauth2.jwt.JwtValidators;
import org.springframework.security.oauth2.jwt.NimbusJwtDecoder;
import org.springframework.security.oauth2.jwt.SupplierJwtDecoder;

/**
 * JWT bearer tokens on the REST API, beside HTTP Basic: the engine's authentication provider
 * when {@code CAMUNDA_JWT_ISSUER_URI} is set ({@link RestAuthentication}).
 *
 * <p>A request with {@code Authorization: Bearer <token>} is checked by Spring Security's JWT
 * decoder: the signature against the issuer's JWK set (found through its OpenID configuration),
 * the issuer, the expiry and not-before times (60 s of clock skew), and the audience when
 * {@code CAMUNDA_JWT_AUDIENCE} is set. The claim {@code CAMUNDA_JWT_USER_CLAIM} (default
 * {@code preferred_username}) names the engine user; the engine's authentication filter then
 * looks up that user's groups and tenants in the identity service, as for Basic, so the user's
 * and its groups' authorizations apply. Any other request goes to Camunda's Basic provider.
 *
 * <p>The issuer is asked lazily, at the first bearer token, and asked again at the next one
 * while it cannot be reached: the engine starts without it, and bearer tokens are refused (401)
 * until it answers. A refused token is a DEBUG line naming the reason, never the token.
 */
public final class JwtAuthentication implements AuthenticationProvider {

  private static final String BEARER = "Bearer ";
  private static final Logger LOG = LoggerFactory.getLogger(JwtAuthentication.class);

  private final JwtDecoder decoder;
  private final String issuer;
  private final String userClaim;
  private final AuthenticationProvider basic;

  JwtAuthentication(
      JwtDecoder decoder, String issuer, String userClaim, AuthenticationProvider basic) {
    this.decoder = decoder;
    this.issuer = issuer;
    this.userClaim = userClaim;
    this.basic = basic;
  }

  /** The decoder for {@code issuer}, built at its first use (see the class comment). */
  static JwtDecoder decoder(String issuer, String audience) {
    return new SupplierJwtDecoder(
        () -> {
          NimbusJwtDecoder decoder = NimbusJwtDecoder.withIssuerLocation(issuer).build();
          OAuth2TokenValidator<Jwt> validator = JwtValidators.createDefaultWithIssuer(issuer);
          if (!audience.isEmpty()) {
            validator =
                new DelegatingOAuth2TokenValidator<>(
                    validator,
                    new JwtClaimValidator<List<String>>(
                        JwtClaimNames.AUD, aud -> aud != null && aud.contains(audience)));
          }
          decoder.setJwtValidator(validator);
          return decoder;
        });
  }

  @Override
  public AuthenticationResult extractAuthenticatedUser(
      HttpServletRequest request, ProcessEngine engine) {
    String header = request.getHeader("Authorization");
    if (header == null || !header.regionMatches(true, 0, BEARER, 0, BEARER.length())) {
      return basic.extractAuthenticatedUser(request, engine);
    }
    Jwt jwt;
    try {
      jwt = decoder.decode(header.substring(BEARER.length()).trim());
    } catch (JwtValidationException error) {
      LOG.debug("bearer token refused: {}", descriptions(error.getErrors()));
      return AuthenticationResult.unsuccessful();
    } catch (JwtDecoderInitializationException error) {
      unreachable(error);
      return AuthenticationResult.unsuccessful();
    } catch (JwtException error) {
      if (String.valueOf(error.getMessage()).contains(NO_JWK_SET)) {
        unreachable(error);
      } else {
        LOG.debug("bearer token refused: {}", reason(error));
      }
      return AuthenticationResult.unsuccessful();
    } catch (RuntimeException error) {
      // The issuer's configuration is resolved lazily: its failures come through unwrapped.
      unreachable(error);
      return AuthenticationResult.unsuccessful();
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

  private static final String NO_JWK_SET = "Couldn't retrieve remote JWK set";

  private static final List<String> KNOWN_REASONS =
      List.of(
          "Invalid signature",
          "Another algorithm expected, or no matching key(s) found",
          "Malformed token",
          "Unsigned tokens are not supported");

  private void unreachable(Exception error) {
    LOG.warn(
        "bearer token refused: the JWT issuer {} cannot be asked for its keys ({})",
        issuer,
        rootCause(error));
  }

  private static String descriptions(Collection<OAuth2Error> errors) {
    return errors.stream().map(OAuth2Error::getDescription).collect(Collectors.joining("; "));
  }

  private static String rootCause(Throwable error) {
    Throwable cause = error;
    while (cause.getCause() != null) {
      cause = cause.getCause();
    }
    return cause.getClass().getSimpleName();
  }
}
